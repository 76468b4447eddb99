// Package readme reads the fenced blocks of the README, for the tests that
// hold them to what they show: every Caddyfile adapts and validates, every
// command runs as written. The rules that say how a block is read are
// here, once.
package readme

import (
	"os"
	"regexp"
	"strings"
)

// Block is a fenced block of a Markdown document: its language, its text,
// the line it starts on and the heading it is under.
type Block struct {
	Lang, Text string
	Line       int
	Heading    string
}

var fence = regexp.MustCompile("(?m)^( *)```([a-z]*)\n")

// Read returns the blocks of the Markdown file at path.
func Read(path string) ([]Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Blocks(string(data)), nil
}

// Blocks returns the fenced blocks of markdown, in order.
func Blocks(markdown string) []Block {
	var blocks []Block
	heading := ""
	lines := strings.SplitAfter(markdown, "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if strings.HasPrefix(line, "#") {
			heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
			continue
		}
		open := fence.FindStringSubmatch(line)
		if open == nil {
			continue
		}
		indent, block := open[1], Block{Lang: open[2], Line: i + 1, Heading: heading}
		var text strings.Builder
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			text.WriteString(strings.TrimPrefix(lines[i], indent))
		}
		block.Text = text.String()
		blocks = append(blocks, block)
	}
	return blocks
}

// IsSyntax reports whether a Caddyfile block is a directive's syntax (its
// placeholders in angle brackets), not a configuration.
func (b Block) IsSyntax() bool { return strings.Contains(b.Text, "[<matcher>]") }

// Caddyfile returns a Caddyfile block as a whole Caddyfile: as it is when
// it starts with global options or a site; a block of directives alone (a
// handler's block, shown on its own) in a site of its own, on loopback.
// Syntax blocks are none.
func (b Block) Caddyfile() (string, bool) {
	if b.Lang != "caddyfile" || b.IsSyntax() {
		return "", false
	}
	first := ""
	for _, line := range strings.Split(b.Text, "\n") {
		if trimmed := strings.TrimSpace(line); trimmed != "" && !strings.HasPrefix(trimmed, "#") {
			first = strings.Fields(trimmed)[0]
			break
		}
	}
	if directive.MatchString(first) && first != "localhost" {
		var site strings.Builder
		site.WriteString("http://127.0.0.1:8080 {\n")
		for _, line := range strings.SplitAfter(strings.TrimSuffix(b.Text, "\n"), "\n") {
			site.WriteString("\t" + line)
		}
		site.WriteString("\n}\n")
		return site.String(), true
	}
	return b.Text, true
}

// directive is a first word that names a handler directive, where a site
// would name an address (which has a dot, a colon or a slash, or is
// localhost): lower case letters, digits and underscores.
var directive = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Anchors are the anchors GitHub gives the headings of a Markdown text
// (outside its fenced blocks), as links name them.
func Anchors(markdown string) []string {
	var anchors []string
	for i, part := range strings.Split(markdown, "```") {
		if i%2 == 1 { // a fenced block
			continue
		}
		for _, m := range heading.FindAllStringSubmatch(part, -1) {
			anchors = append(anchors, Anchor(m[1]))
		}
	}
	return anchors
}

var heading = regexp.MustCompile(`(?m)^#+ (.+)$`)

// Anchor is the anchor GitHub gives a heading: in lower case, without its
// punctuation but hyphens and underscores, spaces as hyphens.
func Anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 0x7f:
			b.WriteRune(r)
		}
	}
	return b.String()
}
