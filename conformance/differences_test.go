package conformance

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// differencesFile is the one table of where and why this module and
// Clerk's SDK disagree: every disagreement the suite finds must be in it,
// and every row of it must still be found.
const differencesFile = "DIFFERENCES.md"

// The classes of a known difference.
const (
	// classStricter: Clerk's SDK accepts what the module refuses, on
	// purpose; the row quotes the README sentence that says so.
	classStricter = "stricter by design"
	// classSDKBug: Clerk's SDK does something wrong that the module does
	// not do; the row cites the SDK's code.
	classSDKBug = "SDK bug"
)

// difference is one row of the table.
type difference struct {
	line     int
	patterns []*regexp.Regexp // of case ids
	aspects  []string         // verdict, wire, or identity fields
	sdk      string           // "accepts" or "refuses" for verdicts
	module   string
	class    string
	why      string
}

var (
	backquoted = regexp.MustCompile("`([^`]+)`")
	// readmeQuote is how a row quotes the README: README: “…”.
	readmeQuote = regexp.MustCompile(`README: “([^”]+)”`)
	// sdkCitation is how a row cites the SDK: a file of the installed
	// package and a line, e.g. @clerk/backend/dist/index.js:1230.
	sdkCitation = regexp.MustCompile(`(@clerk/(?:backend|shared)/dist/[\w./-]+):(\d+)`)
)

// readDifferences parses the table: the rows after its header line.
func readDifferences() ([]*difference, error) {
	f, err := os.Open(differencesFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []*difference
	inTable := false
	scanner := bufio.NewScanner(f)
	for n := 1; scanner.Scan(); n++ {
		line := strings.TrimSpace(scanner.Text())
		switch {
		case strings.HasPrefix(line, "| Cases |"):
			inTable = true
		case !inTable || strings.HasPrefix(line, "|---"):
		case !strings.HasPrefix(line, "|"):
			inTable = false
		default:
			row, err := parseRow(n, line)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", differencesFile, n, err)
			}
			rows = append(rows, row)
		}
	}
	return rows, scanner.Err()
}

func parseRow(n int, line string) (*difference, error) {
	cells := strings.Split(strings.Trim(line, "|"), "|")
	if len(cells) != 6 {
		return nil, fmt.Errorf("a row has 6 cells (cases, differs in, Clerk's SDK, this module, class, why), not %d", len(cells))
	}
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	row := &difference{line: n, sdk: cells[2], module: cells[3], class: cells[4], why: cells[5]}
	row.aspects = []string{cells[1]}
	if fields := backquoted.FindAllStringSubmatch(cells[1], -1); len(fields) > 0 {
		row.aspects = nil
		for _, f := range fields {
			row.aspects = append(row.aspects, f[1])
		}
	}
	for _, m := range backquoted.FindAllStringSubmatch(cells[0], -1) {
		row.patterns = append(row.patterns, glob(m[1]))
	}
	if len(row.patterns) == 0 {
		return nil, fmt.Errorf("no case pattern (in backquotes)")
	}
	return row, nil
}

// glob turns a case pattern, where * stands for anything, into a regexp.
func glob(pattern string) *regexp.Regexp {
	return regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$")
}

// explains reports whether the row is about disagreement d.
func (r *difference) explains(d disagreement) bool {
	if !slices.Contains(r.aspects, d.aspect) {
		return false
	}
	if d.aspect == "verdict" && strings.HasPrefix(r.sdk, "accepts") != d.sdkAccepts {
		return false
	}
	for _, p := range r.patterns {
		if p.MatchString(d.caseID) {
			return true
		}
	}
	return false
}

// validate checks that the row says what kind of difference it is and
// backs it: a stricter-by-design row quotes the README (which must say
// it), an SDK-bug row cites the line of the SDK at fault.
func (r *difference) validate(readme string) error {
	switch r.class {
	case classStricter:
		if slices.Contains(r.aspects, "verdict") && (!strings.HasPrefix(r.sdk, "accepts") || !strings.HasPrefix(r.module, "refuses")) {
			return fmt.Errorf("%s:%d: a stricter module refuses what the SDK accepts", differencesFile, r.line)
		}
		quotes := readmeQuote.FindAllStringSubmatch(r.why, -1)
		if len(quotes) == 0 {
			return fmt.Errorf(`%s:%d: quote the README sentence that says so, as README: “…”`, differencesFile, r.line)
		}
		for _, q := range quotes {
			if !strings.Contains(readme, normalizeSpace(q[1])) {
				return fmt.Errorf("%s:%d: the README does not say %q", differencesFile, r.line, q[1])
			}
		}
	case classSDKBug:
		citations := sdkCitation.FindAllStringSubmatch(r.why, -1)
		if len(citations) == 0 {
			return fmt.Errorf("%s:%d: cite the SDK's line, as @clerk/backend/dist/<file>:<line>", differencesFile, r.line)
		}
		for _, c := range citations {
			if err := checkCitation(c[1], c[2]); err != nil {
				return fmt.Errorf("%s:%d: %v", differencesFile, r.line, err)
			}
		}
	default:
		return fmt.Errorf("%s:%d: class %q is neither %q nor %q", differencesFile, r.line, r.class, classStricter, classSDKBug)
	}
	return nil
}

// checkCitation checks that a cited line exists in the installed SDK.
func checkCitation(file, line string) error {
	data, err := os.ReadFile(filepath.Join(sdkDir, "node_modules", file))
	if err != nil {
		return fmt.Errorf("citing %s: %v", file, err)
	}
	n, _ := strconv.Atoi(line)
	if lines := strings.Count(string(data), "\n") + 1; n < 1 || n > lines {
		return fmt.Errorf("citing %s:%s: the file has %d lines", file, line, lines)
	}
	return nil
}

func normalizeSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

// readme is the README, and the rules of docs/verification.md it links
// to, their whitespace normalized, for quotes to be found in whatever way
// their lines are wrapped.
func readme() (string, error) {
	var text []string
	for _, file := range []string{"README.md", filepath.Join("docs", "verification.md")} {
		data, err := os.ReadFile(filepath.Join("..", file))
		if err != nil {
			return "", err
		}
		text = append(text, string(data))
	}
	return normalizeSpace(strings.Join(text, "\n")), nil
}
