package clerkm2m

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-clerk/clerk-m2m/backend/backendtest"
	"github.com/caddy-clerk/clerk-m2m/internal/examples"
	"github.com/caddy-clerk/clerk-m2m/internal/readme"
	"github.com/caddy-clerk/clerk-m2m/internal/testenv"
	"github.com/caddy-clerk/clerk-m2m/verify"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The subdirectives of each directive are said in five places: the parser's
// table (the source), the handler's JSON fields with their doc comments
// (the user docs Caddy's site renders), the syntax in UnmarshalCaddyfile's
// doc comment, and the README's syntax block and table. These tests keep
// them one.

// directiveDocs are where each directive is documented.
var directiveDocs = []struct {
	directive, readmeSection string
	source, parser, typeName string   // the files of the handler and its parser, and its type
	names                    []string // from the parser
	handler                  any
}{
	{"clerk_m2m", "## The `clerk_m2m` directive", "module.go", "caddyfile.go", "Handler", handlerSubdirectives.names(), Handler{}},
	{"clerk_m2m_token", "## The `clerk_m2m_token` directive", "mint_handler.go", "mint_caddyfile.go", "MintHandler", mintSubdirectives.names(), MintHandler{}},
}

func TestSubdirectivesAreDocumentedAsParsed(t *testing.T) {
	readme := readFile(t, "README.md")
	for _, doc := range directiveDocs {
		t.Run(doc.directive, func(t *testing.T) {
			section := markdownSection(t, readme, doc.readmeSection)
			assert.ElementsMatch(t, doc.names, jsonFields(doc.handler), "the JSON fields are the subdirectives")
			assert.Equal(t, doc.names, syntaxNames(t, section, doc.directive, "\t"), "the README's syntax block")
			unmarshalDoc := methodDoc(t, doc.parser, doc.typeName, "UnmarshalCaddyfile")
			assert.Equal(t, doc.names, syntaxNames(t, unmarshalDoc, doc.directive, "\t    "), "UnmarshalCaddyfile's doc comment")

			fieldDocs := fieldDocs(t, doc.source, doc.typeName)
			rows := tableRows(t, section, "| subdirective | default | meaning |")
			var names []string
			for _, row := range rows {
				name := strings.Trim(row[0], "`")
				names = append(names, name)
				assert.Equal(t, defaultOf(t, fieldDocs[name]), row[1], "the README's default of %s is its field's", name)
			}
			assert.Equal(t, doc.names, names, "the README's table")
		})
	}
}

func TestUnknownSubdirectivesListTheParsersNames(t *testing.T) {
	_, err := parse(t, "clerk_m2m {\n secret sk_test_abc\n}")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "(known: "+strings.Join(handlerSubdirectives.names(), ", ")+")")
	err = new(MintHandler).UnmarshalCaddyfile(caddyfile.NewTestDispenser("clerk_m2m_token {\n token_ttl 1h\n}"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "(known: "+strings.Join(mintSubdirectives.names(), ", ")+")")
}

// TestDocumentedDefaultsAreApplied: the defaults the field docs state are
// the values Provision gives an empty configuration, and every
// environment variable they name is one the tests clear.
func TestDocumentedDefaultsAreApplied(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_MACHINE_SECRET_KEY", "ak_docs")
	verifier, minter := &Handler{}, &MintHandler{}
	require.NoError(t, provision(t, verifier))
	require.NoError(t, provision(t, minter))
	setup := verifier.verifier.Setup() // verify applies the defaults the handler documents
	applied := map[string]map[string]any{
		"Handler": {
			"accept": string(setup.Accept[0]), "api_url": setup.APIURL, "timeout": setup.Timeout,
			"clock_skew": setup.ClockSkew, "cache_ttl": setup.CacheTTL, "jwks_max_stale": setup.KeysMaxStale,
			"max_clerk_calls": setup.MaxClerkCalls, "max_clerk_rate": setup.MaxClerkRate, "cache_max_bytes": setup.CacheMaxBytes,
		},
		"MintHandler": {
			"api_url": minter.apiURL, "format": minter.Format, "ttl": *minter.TTL, "renew_at": minter.RenewAt,
			"header": minter.Header, "timeout": *minter.Timeout,
		},
	}
	var envNames []string
	for _, doc := range directiveDocs {
		for name, text := range fieldDocs(t, doc.source, doc.typeName) {
			def := defaultOf(t, text)
			for _, m := range regexp.MustCompile(`\{env\.(\w+)\}`).FindAllStringSubmatch(def, -1) {
				envNames = append(envNames, m[1])
			}
			value, ok := applied[doc.typeName][name]
			if !ok {
				continue
			}
			literal := regexp.MustCompile("`([^`{]+)`$").FindStringSubmatch(def)
			require.NotNil(t, literal, "%s.%s: no value in %q", doc.typeName, name, def)
			assert.Equal(t, value, parseDefault(t, literal[1], value), "%s.%s", doc.typeName, name)
		}
	}
	slices.Sort(envNames)
	assert.ElementsMatch(t, testenv.ClerkVariables, slices.Compact(envNames), "the variables the defaults read are the ones tests clear")
}

func TestPlaceholdersAreDocumentedAsAnswered(t *testing.T) {
	var names []string
	for _, name := range new(verify.Identity).FieldNames() {
		names = append(names, "{"+identityPlaceholderPrefix+name+"}")
	}
	claim := "{" + identityPlaceholderPrefix + claimPlaceholderPrefix + "<path>}"
	for where, text := range map[string]string{
		"README":                markdownSection(t, readFile(t, "README.md"), "## Placeholders"),
		"Handler's doc comment": typeDoc(t, "module.go", "Handler"),
	} {
		var documented []string
		for _, row := range tableRows(t, text, "| placeholder | value |") {
			if placeholder := strings.Trim(row[0], "`"); placeholder != claim {
				documented = append(documented, placeholder)
			}
		}
		assert.ElementsMatch(t, names, documented, where)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(data)
}

// markdownSection is the text under a heading, up to the next heading of
// its level.
func markdownSection(t *testing.T, markdown, heading string) string {
	t.Helper()
	start := strings.Index(markdown, "\n"+heading)
	require.GreaterOrEqual(t, start, 0, "no %q", heading)
	rest := markdown[start+1+len(heading):]
	if end := strings.Index(rest, "\n"+strings.Fields(heading)[0]+" "); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

// tableRows returns the cells of the rows of the first table under header.
func tableRows(t *testing.T, text, header string) [][]string {
	t.Helper()
	var rows [][]string
	in := false
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "//"))
		switch {
		case line == header:
			in = true
		case in && strings.HasPrefix(line, "|-"):
		case in && strings.HasPrefix(line, "|"):
			var cells []string
			for _, cell := range strings.Split(strings.Trim(line, "|"), "|") {
				cells = append(cells, strings.TrimSpace(cell))
			}
			rows = append(rows, cells)
		case in:
			return rows
		}
	}
	require.NotEmpty(t, rows, "no table %q", header)
	return rows
}

// syntaxNames lists the subdirectives of the syntax block of directive in
// text: the first word of the lines indented by indent inside it.
func syntaxNames(t *testing.T, text, directive, indent string) []string {
	t.Helper()
	start := strings.Index(text, directive+" [<matcher>] {\n")
	require.GreaterOrEqual(t, start, 0, "no syntax of %s", directive)
	var names []string
	for line := range strings.Lines(text[start:]) {
		line = strings.TrimSuffix(line, "\n")
		if strings.TrimSpace(line) == "}" && !strings.HasPrefix(line, indent) {
			break
		}
		rest, ok := strings.CutPrefix(line, indent)
		if ok && rest != "" && rest[0] != ' ' && rest[0] != '\t' && rest != "}" {
			names = append(names, strings.Fields(rest)[0])
		}
	}
	return names
}

// jsonFields lists the JSON names of a handler's configuration.
func jsonFields(handler any) []string {
	var names []string
	for i, of := 0, reflect.TypeOf(handler); i < of.NumField(); i++ {
		if name, _, _ := strings.Cut(of.Field(i).Tag.Get("json"), ","); name != "" {
			names = append(names, name)
		}
	}
	return names
}

// goFile parses one of this package's files with its comments.
func goFile(t *testing.T, path string) *ast.File {
	t.Helper()
	file, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ParseComments)
	require.NoError(t, err)
	return file
}

// typeDoc is the doc comment of a type declared in path.
func typeDoc(t *testing.T, path, typeName string) string {
	t.Helper()
	for _, decl := range goFile(t, path).Decls {
		if gen, ok := decl.(*ast.GenDecl); ok && gen.Tok == token.TYPE && gen.Specs[0].(*ast.TypeSpec).Name.Name == typeName {
			return gen.Doc.Text()
		}
	}
	t.Fatalf("no type %s in %s", typeName, path)
	return ""
}

// methodDoc is the doc comment of a method of typeName declared in path.
func methodDoc(t *testing.T, path, typeName, method string) string {
	t.Helper()
	for _, decl := range goFile(t, path).Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Name.Name != method || fn.Recv == nil {
			continue
		}
		if star, ok := fn.Recv.List[0].Type.(*ast.StarExpr); ok && star.X.(*ast.Ident).Name == typeName {
			return fn.Doc.Text()
		}
	}
	t.Fatalf("no method %s.%s in %s", typeName, method, path)
	return ""
}

// fieldDocs returns the doc comments of a configuration type's fields, by
// JSON name, each on one line.
func fieldDocs(t *testing.T, path, typeName string) map[string]string {
	t.Helper()
	docs := map[string]string{}
	ast.Inspect(goFile(t, path), func(n ast.Node) bool {
		spec, ok := n.(*ast.TypeSpec)
		if !ok || spec.Name.Name != typeName {
			return true
		}
		for _, field := range spec.Type.(*ast.StructType).Fields.List {
			if field.Tag == nil {
				continue
			}
			tag, err := strconv.Unquote(field.Tag.Value)
			require.NoError(t, err)
			name, _, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
			docs[name] = strings.Join(strings.Fields(field.Doc.Text()), " ")
		}
		return false
	})
	require.NotEmpty(t, docs, "no type %s in %s", typeName, path)
	return docs
}

// defaultOf is what a field's doc comment says its default is: its last
// sentence, "Default: …".
func defaultOf(t *testing.T, doc string) string {
	t.Helper()
	_, def, found := strings.Cut(doc, "Default: ")
	require.True(t, found, "no default in %q", doc)
	require.True(t, strings.HasSuffix(def, ".") && !strings.Contains(def, ". "), "the default is not the last sentence of %q", doc)
	return strings.TrimSuffix(def, ".")
}

// parseDefault reads a documented default as the kind of value like is.
func parseDefault(t *testing.T, text string, like any) any {
	t.Helper()
	switch like.(type) {
	case caddy.Duration:
		d, err := caddy.ParseDuration(text)
		require.NoError(t, err)
		return caddy.Duration(d)
	case time.Duration:
		d, err := caddy.ParseDuration(text)
		require.NoError(t, err)
		return d
	case float64:
		f, err := strconv.ParseFloat(text, 64)
		require.NoError(t, err)
		return f
	case int:
		n, err := strconv.Atoi(text)
		require.NoError(t, err)
		return n
	case int64: // a size
		n, err := humanize.ParseBytes(text)
		require.NoError(t, err)
		return int64(n)
	default:
		return text
	}
}

// exampleEnv is the environment the examples read, with nothing set that
// a Caddyfile substitutes when adapted ({$VAR:default} takes its default
// only for a variable that is unset).
func exampleEnv(t *testing.T, clerk *backendtest.Server) (secretFile string) {
	t.Helper()
	testenv.ClearClerk(t)
	secretFile = filepath.Join(t.TempDir(), "clerk_secret_key")
	require.NoError(t, os.WriteFile(secretFile, []byte(clerk.SecretKey()+"\n"), 0o600))
	for name, value := range map[string]string{
		"CLERK_SECRET_KEY": clerk.SecretKey(), "CLERK_MACHINE_SECRET_KEY": "ak_examples", "CLERK_API_URL": clerk.URL,
		"CLERK_JWT_KEY": clerk.PublicKeyPEM(), "CLERK_PUBLISHABLE_KEY": clerk.PublishableKey(), "GATEWAY_MACHINE_SECRET_KEY": "ak_gateway", "GATEWAY_MACHINE_ID": "mch_gateway",
		"A_MACHINE_SECRET_KEY": "ak_service_a", "B_MACHINE_SECRET_KEY": "ak_service_b", "B_MACHINE_ID": "mch_service_b",
	} {
		t.Setenv(name, value)
	}
	clearAdaptVariables(t)
	t.Setenv("CLERK_SECRET_KEY_FILE", secretFile) // secrets.Caddyfile reads the key from this file
	return secretFile
}

// clearAdaptVariables unsets, for the test, the variables the examples
// substitute when adapted, so that they adapt with their defaults.
func clearAdaptVariables(t *testing.T) {
	t.Helper()
	for _, name := range []string{"PORT", "UPSTREAM", "MACHINE_ID", "APP_ORIGIN", "BILLING", "PARTNERS", "APP",
		"BILLING_MACHINE_ID", "CLERK_SECRET_KEY_FILE", "CADDY_CLUSTER_STORAGE", "A_SIDECAR", "B_GATEWAY", "B_SERVICE", "TOKEN_FORMAT", "MCP_RESOURCE"} {
		t.Setenv(name, "") // restored after the test...
		require.NoError(t, os.Unsetenv(name))
	}
}

// defaultSecretFile is where secrets.Caddyfile reads the key by default;
// the goldens show it in place of the test's own file.
const defaultSecretFile = "/run/secrets/clerk_secret_key"

// TestExamples checks every example the main build runs (see
// examples.Check; UPDATE_GOLDEN=1 rewrites their JSON). An example whose
// xcaddy line builds in other modules is checked by the tests of the
// module that builds that Caddy.
func TestExamples(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	secretFile := exampleEnv(t, clerk)
	files, err := filepath.Glob("examples/*Caddyfile")
	require.NoError(t, err)
	files = append(files, "examples/two-services/Caddyfile")
	require.GreaterOrEqual(t, len(files), 7)
	for _, file := range files {
		t.Run(examples.Name(file), func(t *testing.T) {
			if modules := examples.ExtraModules([]byte(readFile(t, file))); len(modules) > 0 {
				t.Skipf("needs Caddy built with %s, as its xcaddy line says: the tests of the module that builds it check it",
					strings.Join(modules, ", "))
			}
			examples.Check(t, file, filepath.Join("testdata", "examples"), map[string]string{secretFile: defaultSecretFile}, clerk.SecretKey())
		})
	}
}

func TestExposedListeners(t *testing.T) {
	assert.Empty(t, exposedListeners([]string{"tcp/127.0.0.1:8081", "tcp/[::1]:8081", "127.0.0.2:80", "localhost:8081",
		"unix//run/sidecar.sock", "unix//run/sidecar.sock|0222"}))
	assert.Equal(t, []string{":8081", "tcp/0.0.0.0:8081", "tcp/[::]:8081", "10.0.0.5:8081", "example.com:80", "fd/3", "tcp/127.0.0.1:bad"},
		exposedListeners([]string{":8081", "tcp/0.0.0.0:8081", "tcp/[::]:8081", "10.0.0.5:8081", "example.com:80", "fd/3", "tcp/127.0.0.1:bad"}))
}

// TestExampleLayoutsAreSafe provisions every example and every Caddyfile
// of the README, and checks that no server hands a machine's authority to
// anyone who can reach it (none that listens beyond loopback has a
// clerk_m2m_token, or proxies to a server that has one: see
// exposedSidecars), and that every clerk_m2m gates what it seems to (see
// unsafeGates) but in the README's counter-example, marked UNSAFE. Those
// built with more modules (their xcaddy line) are the Redis suite's, which
// runs caddy validate on them and finds neither warning.
func TestExampleLayoutsAreSafe(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	exampleEnv(t, clerk)
	sources := map[string]string{}
	files, err := filepath.Glob("examples/*Caddyfile")
	require.NoError(t, err)
	nested, err := filepath.Glob("examples/*/Caddyfile")
	require.NoError(t, err)
	for _, file := range append(files, nested...) {
		if source := readFile(t, file); len(examples.ExtraModules([]byte(source))) == 0 {
			sources[file] = source
		}
	}
	blocks, err := readme.Read("README.md")
	require.NoError(t, err)
	for _, block := range blocks {
		if caddyfile, ok := block.Caddyfile(); ok && len(examples.ExtraModules([]byte(block.Text))) == 0 {
			sources[fmt.Sprintf("README.md, line %d", block.Line)] = caddyfile
		}
	}
	sidecars, unsafe := 0, 0
	for name, source := range sources {
		t.Run(name, func(t *testing.T) {
			servers := provisionedServers(t, source)
			for _, server := range servers {
				if walkServer(server).mints {
					sidecars++
				}
			}
			assert.Empty(t, exposedSidecars(servers), "servers beyond loopback that hand out a machine's authority")
			if strings.Contains(source, "# UNSAFE") { // the README's counter-example
				assert.NotEmpty(t, unsafeGates(servers), "the warning the counter-example draws")
				unsafe++
				return
			}
			assert.Empty(t, unsafeGates(servers), "clerk_m2m handlers that cannot gate what they seem to")
		})
	}
	assert.GreaterOrEqual(t, sidecars, 2, "the two-services example and the README's sidecar were checked")
	assert.Equal(t, 1, unsafe, "the README's counter-example was checked")
}

// TestExposedSidecars walks adapted Caddyfiles as the App does when they
// start: a server beyond loopback is found when a clerk_m2m_token is among
// its handlers at any depth (handle, handle_errors, a named route, and the
// handle_response routes of reverse_proxy and intercept, which run
// handlers too), or when it proxies to a server that has one, however
// that server is reached (127.0.0.1, localhost, [::1], a unix socket,
// through another server); a server on loopback, or one that proxies
// elsewhere, is not.
func TestExposedSidecars(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_MACHINE_SECRET_KEY", "ak_sidecar")
	const sidecar = "http://localhost:8081 {\n\tbind 127.0.0.1 [::1]\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n"
	for name, tc := range map[string]struct {
		caddyfile string
		want      []string // "<exposed listeners> → <listeners of the server that mints>"
	}{
		"a sidecar on every interface": {
			caddyfile: ":8080 {\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"a sidecar on loopback": {caddyfile: sidecar},
		"a sidecar on a unix socket": {
			caddyfile: "http://localhost {\n\tbind unix//run/sidecar.sock|0222\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n",
		},
		"in handle": {
			caddyfile: ":8080 {\n\thandle /a/* {\n\t\tclerk_m2m_token\n\t\treverse_proxy upstream.internal:80\n\t}\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"in handle_errors": {
			caddyfile: ":8080 {\n\terror 500\n\thandle_errors {\n\t\tclerk_m2m_token\n\t\treverse_proxy upstream.internal:80\n\t}\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"in a named route": {
			caddyfile: "&(minting) {\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n\n:8080 {\n\tinvoke minting\n}\n",
			want:      []string{":8080 → :8080"},
		},
		"in reverse_proxy's handle_response": {
			caddyfile: ":8080 {\n\treverse_proxy auth.internal:80 {\n\t\t@ok status 2xx\n\t\thandle_response @ok {\n" +
				"\t\t\tclerk_m2m_token\n\t\t\treverse_proxy upstream.internal:80\n\t\t}\n\t}\n}\n",
			want: []string{":8080 → :8080"},
		},
		"in forward_auth's handle_response": {
			caddyfile: ":8080 {\n\tforward_auth auth.internal:80 {\n\t\turi /check\n\t\t@ok status 2xx\n\t\thandle_response @ok {\n" +
				"\t\t\tclerk_m2m_token\n\t\t\treverse_proxy upstream.internal:80\n\t\t}\n\t}\n}\n",
			want: []string{":8080 → :8080"},
		},
		"in intercept's handle_response": {
			caddyfile: ":8080 {\n\tintercept {\n\t\t@denied status 401\n\t\thandle_response @denied {\n" +
				"\t\t\tclerk_m2m_token\n\t\t\treverse_proxy upstream.internal:80\n\t\t}\n\t}\n\trespond 401\n}\n",
			want: []string{":8080 → :8080"},
		},
		"proxying to a loopback sidecar at 127.0.0.1": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy 127.0.0.1:8081\n}\n",
			want:      []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying to a loopback sidecar at localhost, by URL": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy http://localhost:8081\n}\n",
			want:      []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying to a loopback sidecar at [::1], among other upstreams": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy other.internal:80 [::1]:8081\n}\n",
			want:      []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying to a sidecar on every interface, at localhost": {
			caddyfile: ":8081 {\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n\n:8080 {\n\treverse_proxy localhost:8081\n}\n",
			want:      []string{":8080 → :8081", ":8081 → :8081"},
		},
		"proxying to a sidecar on a unix socket": {
			caddyfile: "http://localhost {\n\tbind unix//run/sidecar.sock|0222\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n\n" +
				":8080 {\n\treverse_proxy unix//run/sidecar.sock\n}\n",
			want: []string{":8080 → unix//run/sidecar.sock|0222"},
		},
		"proxying to a loopback server that proxies to a sidecar": {
			caddyfile: sidecar + "http://localhost:8082 {\n\tbind 127.0.0.1\n\treverse_proxy 127.0.0.1:8081\n}\n\n" +
				":8080 {\n\treverse_proxy localhost:8082\n}\n",
			want: []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying in handle_response to a sidecar": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy auth.internal:80 {\n\t\t@ok status 2xx\n\t\thandle_response @ok {\n" +
				"\t\t\treverse_proxy 127.0.0.1:8081\n\t\t}\n\t}\n}\n",
			want: []string{":8080 → 127.0.0.1:8081 [::1]:8081"},
		},
		"proxying elsewhere": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy 127.0.0.1:9090 127.0.0.2:8081 sidecar.internal:8081 unix//run/other.sock\n}\n",
		},
		"proxying to an upstream known per request": {
			caddyfile: sidecar + ":8080 {\n\treverse_proxy {http.request.header.X-Upstream}\n}\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			servers := provisionedServers(t, tc.caddyfile)
			var got []string
			for _, s := range exposedSidecars(servers) {
				got = append(got, strings.Join(s.listen, " ")+" → "+strings.Join(servers[s.mintsOn].Listen, " "))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReaches(t *testing.T) {
	for _, tc := range []struct {
		dial, listen string
		want         bool
	}{
		{"127.0.0.1:8081", "127.0.0.1:8081", true},
		{"127.0.0.1:8081", "tcp/127.0.0.1:8081", true},
		{"localhost:8081", "127.0.0.1:8081", true},
		{"localhost:8081", "[::1]:8081", true},
		{"[::1]:8081", "localhost:8081", true},
		{"127.0.0.1:8081", ":8081", true},
		{":8081", ":8081", true},
		{"[::1]:8081", "[::]:8081", true},
		{"127.0.0.1:8085", "127.0.0.1:8080-8090", true},
		{"unix//run/sidecar.sock", "unix//run/sidecar.sock|0222", true},
		{"127.0.0.1:8082", "127.0.0.1:8081", false},
		{"127.0.0.2:8081", "127.0.0.1:8081", false},
		{"10.0.0.5:8081", ":8081", false}, // perhaps this host: the configuration does not say
		{"127.0.0.1:8081", "unix//run/sidecar.sock", false},
		{"unix//run/other.sock", "unix//run/sidecar.sock", false},
		{"127.0.0.1:8081", "fd/3", false},
		{"{http.request.host}:8081", ":8081", false},
		{"127.0.0.1:bad", ":8081", false},
	} {
		assert.Equal(t, tc.want, reaches(tc.dial, tc.listen), "%s to %s", tc.dial, tc.listen)
	}
}

// provisionedServers adapts a Caddyfile and provisions its HTTP app as
// Caddy does before it starts a configuration (no listener is opened, no
// network call made), and returns its servers. They are cleaned up when
// the test ends.
func provisionedServers(t *testing.T, caddyfileText string) map[string]*caddyhttp.Server {
	t.Helper()
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	require.NoError(t, err)
	var config struct {
		Apps map[string]json.RawMessage `json:"apps"`
	}
	require.NoError(t, json.Unmarshal(adapted, &config))
	app, err := newContext(t).LoadModuleByID("http", config.Apps["http"])
	require.NoError(t, err)
	return app.(*caddyhttp.App).Servers
}

// TestUnsafeGates walks adapted Caddyfiles as the App does: a clerk_m2m
// under a matcher, in a route that answers nothing, before a route that
// forwards and is not under that matcher (the README's UNSAFE layout) is
// found; so is a clerk_m2m after a handler that answers every request
// (in a route block, as written); the layouts that gate what they seem
// to are not.
func TestUnsafeGates(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_SECRET_KEY", "sk_test_layouts")
	for name, tc := range map[string]struct {
		caddyfile string
		want      []string // "<layout>: <answered by> in <sites>"
	}{
		"a matcher on clerk_m2m beside a site-wide reverse_proxy": {
			caddyfile: "api.example.com {\n\tclerk_m2m /api/*\n\treverse_proxy localhost:9000\n}\n",
			want:      []string{"beside: reverse_proxy in [api.example.com]"},
		},
		"beside a reverse_proxy in a handle": {
			caddyfile: ":8080 {\n\tclerk_m2m /api/*\n\thandle {\n\t\treverse_proxy localhost:9000\n\t}\n}\n",
			want:      []string{"beside: reverse_proxy in []"},
		},
		"clerk_m2m after the handler that answers": {
			caddyfile: ":8080 {\n\troute {\n\t\treverse_proxy localhost:9000\n\t\tclerk_m2m\n\t}\n}\n",
			want:      []string{"after: reverse_proxy in []"},
		},
		"clerk_m2m after respond, in routes of its own": {
			caddyfile: ":8080 {\n\troute {\n\t\trespond ok\n\t\thandle /api/* {\n\t\t\tclerk_m2m\n\t\t\treverse_proxy localhost:9000\n\t\t}\n\t}\n}\n",
			want:      []string{"after: respond in []"},
		},
		"the upstream inside the gated block": {
			caddyfile: "api.example.com {\n\thandle /api/* {\n\t\tclerk_m2m\n\t\treverse_proxy localhost:9000\n\t}\n\thandle {\n\t\trespond 404\n\t}\n}\n",
		},
		"a gated block, and a public upstream beside it": {
			caddyfile: "api.example.com {\n\thandle /api/* {\n\t\tclerk_m2m\n\t\treverse_proxy localhost:9000\n\t}\n\thandle {\n\t\treverse_proxy localhost:9001\n\t}\n}\n",
		},
		"the same matcher on both": {
			caddyfile: ":8080 {\n\tclerk_m2m /api/*\n\treverse_proxy /api/* localhost:9000\n}\n",
		},
		"clerk_m2m for the whole site": {
			caddyfile: ":8080 {\n\tclerk_m2m\n\treverse_proxy localhost:9000\n}\n",
		},
		"a public answer before the gate": {
			caddyfile: ":8080 {\n\troute {\n\t\trespond /health ok\n\t\tclerk_m2m\n\t\treverse_proxy localhost:9000\n\t}\n}\n",
		},
		"a matcher on clerk_m2m, and only a refusal beside": {
			caddyfile: ":8080 {\n\tclerk_m2m /api/*\n\trespond 404\n}\n",
		},
		"sites of their own": {
			caddyfile: "a.example.com {\n\tclerk_m2m\n\trespond ok\n}\n\nb.example.com {\n\treverse_proxy localhost:9000\n}\n",
		},
	} {
		t.Run(name, func(t *testing.T) {
			var got []string
			for _, gate := range unsafeGates(provisionedServers(t, tc.caddyfile)) {
				layout := map[string]string{gateBeside: "beside", gateAfterAnswer: "after"}[gate.layout]
				got = append(got, fmt.Sprintf("%s: %s in %v", layout, gate.answeredBy, gate.sites))
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// TestCaddyValidateWarnsAboutLayouts: what `caddy validate` runs (adapt,
// provision, validate, clean up; nothing starts) logs both warnings about
// layouts, which the App otherwise logs when a configuration starts.
func TestCaddyValidateWarnsAboutLayouts(t *testing.T) {
	testenv.ClearClerk(t)
	t.Setenv("CLERK_SECRET_KEY", "sk_test_layouts")
	t.Setenv("CLERK_MACHINE_SECRET_KEY", "ak_layouts")
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	err := caddyValidate("{\n\tadmin off\n\tlog {\n\t\toutput file " + logFile + "\n\t\tlevel WARN\n\t}\n}\n\n" +
		"api.example.com {\n\tclerk_m2m /api/*\n\treverse_proxy localhost:9000\n}\n\n" +
		":8081 {\n\tclerk_m2m_token\n\treverse_proxy upstream.internal:80\n}\n")
	require.NoError(t, err, "warnings, not errors")
	logs := readFile(t, logFile)
	assert.Contains(t, logs, "clerk_m2m verifies only the requests its matcher matches")
	assert.Contains(t, logs, "the server listens beyond loopback")
}

// TestDemosListenOnLoopbackOnly: the runnable demos, with their defaults,
// listen on loopback only, every server of them: they run a gateway in
// front of a fake Clerk whose keys they print.
func TestDemosListenOnLoopbackOnly(t *testing.T) {
	clerk := backendtest.New()
	defer clerk.Close()
	exampleEnv(t, clerk)
	t.Setenv("QUICKSTART_ADDR", "localhost:8080") // the quickstart's defaults
	t.Setenv("QUICKSTART_HOST", "localhost")
	t.Setenv("QUICKSTART_UPSTREAM", "127.0.0.1:9000")
	for _, file := range []string{"examples/quickstart/Caddyfile", "examples/two-services/Caddyfile"} {
		servers := provisionedServers(t, readFile(t, file))
		require.NotEmpty(t, servers, file)
		for name, server := range servers {
			assert.Empty(t, exposedListeners(server.Listen), "%s: server %s listens beyond loopback", file, name)
		}
	}
}
