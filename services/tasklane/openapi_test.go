package tasklane

import (
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/config"
)

// The OpenAPI document (contracts/openapi.json) is checked against the
// server both ways: every route a handler registers in services/ is
// described (found in the source, so a new route without a description
// fails here), and every described operation exists on a running server
// (a described route the mux answers with its own 404 or 405 fails).

// undescribedRoutes are the registrations the document leaves out, and why.
var undescribedRoutes = map[string]string{
	"/debug/pprof/":                "Go's profiler, only with --pprof",
	"/debug/pprof/cmdline":         "Go's profiler, only with --pprof",
	"/debug/pprof/profile":         "Go's profiler, only with --pprof",
	"/debug/pprof/symbol":          "Go's profiler, only with --pprof",
	"/debug/pprof/trace":           "Go's profiler, only with --pprof",
	"/ui/":                         "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/static/":              "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/login":                "the dashboard's HTML pages (services/ui), not the API",
	"POST /ui/login":               "the dashboard's HTML pages (services/ui), not the API",
	"POST /ui/logout":              "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/{$}":                  "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/tasks":                "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/tasks/{id}":           "the dashboard's HTML pages (services/ui), not the API",
	"POST /ui/tasks/{id}/{action}": "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/dlq":                  "the dashboard's HTML pages (services/ui), not the API",
	"POST /ui/dlq":                 "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/lanes":                "the dashboard's HTML pages (services/ui), not the API",
	"POST /ui/lanes/pin":           "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/triggers":             "the dashboard's HTML pages (services/ui), not the API",
	"GET /ui/pauses":               "the dashboard's HTML pages (services/ui), not the API",
	"POST /ui/pauses":              "the dashboard's HTML pages (services/ui), not the API",
	"POST /ui/pauses/{id}/resume":  "the dashboard's HTML pages (services/ui), not the API",
}

// openAPIOps is the document's operations as "METHOD /path" with path
// parameters as {}.
func openAPIOps(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(contracts.OpenAPI(), &doc))
	var ops []string
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "parameters", "summary", "description", "servers":
				continue
			}
			ops = append(ops, strings.ToUpper(method)+" "+path)
		}
	}
	slices.Sort(ops)
	return ops
}

var wildcard = regexp.MustCompile(`\{[^{}]*\}`)

// registration is a route pattern a Handle or HandleFunc call mounts.
type registration struct{ where, pattern string }

// registeredRoutes finds the Handle and HandleFunc calls in services/ and
// the patterns they mount, resolving string constants and variables of
// the module (a pattern built some other way fails the test: teach
// resolve about it).
func registeredRoutes(t *testing.T) []registration {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	fset := token.NewFileSet()
	type file struct {
		path string
		f    *ast.File
	}
	var files []file
	require.NoError(t, filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files = append(files, file{path, f})
		return nil
	}))
	// Package-level string constants and variables (a string, or a slice
	// of them), keyed "pkgname.Name".
	values := map[string][]ast.Expr{}
	for _, fl := range files {
		for _, decl := range fl.f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || (gd.Tok != token.CONST && gd.Tok != token.VAR) {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i < len(vs.Values) {
						key := fl.f.Name.Name + "." + name.Name
						values[key] = append(values[key], vs.Values[i])
					}
				}
			}
		}
	}
	var resolve func(pkg string, e ast.Expr, ranges map[string]ast.Expr, depth int) ([]string, bool)
	resolve = func(pkg string, e ast.Expr, ranges map[string]ast.Expr, depth int) ([]string, bool) {
		if depth > 10 {
			return nil, false
		}
		lookup := func(key string) ([]string, bool) {
			defs := values[key]
			if len(defs) != 1 {
				return nil, false // unknown, or ambiguous
			}
			return resolve(strings.Split(key, ".")[0], defs[0], nil, depth+1)
		}
		switch e := e.(type) {
		case *ast.BasicLit:
			if e.Kind != token.STRING {
				return nil, false
			}
			s, err := strconv.Unquote(e.Value)
			return []string{s}, err == nil
		case *ast.Ident:
			if x, ok := ranges[e.Name]; ok {
				return resolve(pkg, x, nil, depth+1)
			}
			return lookup(pkg + "." + e.Name)
		case *ast.SelectorExpr:
			if x, ok := e.X.(*ast.Ident); ok {
				return lookup(x.Name + "." + e.Sel.Name)
			}
		case *ast.CompositeLit:
			var out []string
			for _, el := range e.Elts {
				v, ok := resolve(pkg, el, ranges, depth+1)
				if !ok {
					return nil, false
				}
				out = append(out, v...)
			}
			return out, true
		case *ast.BinaryExpr:
			if e.Op != token.ADD {
				return nil, false
			}
			l, ok1 := resolve(pkg, e.X, ranges, depth+1)
			r, ok2 := resolve(pkg, e.Y, ranges, depth+1)
			if !ok1 || !ok2 || len(l) != 1 || len(r) != 1 {
				return nil, false
			}
			return []string{l[0] + r[0]}, true
		}
		return nil, false
	}
	var regs []registration
	services := filepath.Join(root, "services") + string(filepath.Separator)
	for _, fl := range files {
		if !strings.HasPrefix(fl.path, services) {
			continue
		}
		ranges := map[string]ast.Expr{} // range value variable → what it ranges over
		ast.Inspect(fl.f, func(n ast.Node) bool {
			if rs, ok := n.(*ast.RangeStmt); ok {
				if v, ok := rs.Value.(*ast.Ident); ok {
					ranges[v.Name] = rs.X
				}
			}
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "Handle" && sel.Sel.Name != "HandleFunc") {
				return true
			}
			where := fset.Position(call.Pos()).String()
			patterns, ok := resolve(fl.f.Name.Name, call.Args[0], ranges, 0)
			if !ok {
				t.Errorf("%s: cannot tell which route pattern this call mounts", where)
				return true
			}
			for _, p := range patterns {
				regs = append(regs, registration{where, p})
			}
			return true
		})
	}
	return regs
}

// Every route a handler in services/ mounts is in the document: a method
// pattern as that operation, a subtree ("/hooks/") as the operations under
// it.
func TestOpenAPIDescribesEveryRegisteredRoute(t *testing.T) {
	ops := openAPIOps(t)
	regs := registeredRoutes(t)
	var patterns []string
	for _, r := range regs {
		patterns = append(patterns, r.pattern)
	}
	// The scan sees the routes of each kind of registration: literal,
	// constant, a variable ranged over, another package's constant.
	for _, want := range []string{"POST /v1/events", "GET /v1/triggers", "POST /v1/admin/routing/pin", config.HookPathPrefix, "/v1/", "GET /healthz", contracts.OpenAPIRoute} {
		require.Contains(t, patterns, want, "the source scan finds %s", want)
	}
	for p := range undescribedRoutes {
		require.Contains(t, patterns, p, "undescribedRoutes names a route no handler mounts")
	}
	for _, r := range regs {
		if _, ok := undescribedRoutes[r.pattern]; ok {
			continue
		}
		method, path, ok := strings.Cut(r.pattern, " ")
		if !ok {
			method, path = "", r.pattern
		}
		path = wildcard.ReplaceAllString(path, "{}")
		described := slices.ContainsFunc(ops, func(op string) bool {
			m, p, _ := strings.Cut(op, " ")
			p = wildcard.ReplaceAllString(p, "{}")
			switch {
			case strings.HasSuffix(path, "/"): // a subtree
				return (method == "" || m == method) && strings.HasPrefix(p, path)
			case method == "":
				return p == path
			default:
				return m == method && p == path
			}
		})
		if !described {
			t.Errorf("%s: route %q is not described in contracts/openapi.json", r.where, r.pattern)
		}
	}
}

// Every operation the document describes exists on a running server:
// none is answered by the mux's own 404 or 405 (plain text), and one
// without a path parameter answers no 404 at all.
func TestOpenAPIRoutesExist(t *testing.T) {
	const hookPath = "openapi/probe"
	app := startEmbedded(t, func(c *config.Config) {
		c.Triggers = []config.Trigger{{
			Name: "openapi-probe", HTTP: &config.HTTPTrigger{Path: hookPath},
			Event: config.TriggerEvent{Type: "com.example.noop", Source: "/openapi-probe"},
		}}
	})
	ops := openAPIOps(t)
	require.Contains(t, ops, "POST /v1/events")
	values := map[string]string{"id": "no-such-task", "path": hookPath}
	for _, op := range ops {
		method, path, _ := strings.Cut(op, " ")
		url := app.URL() + wildcard.ReplaceAllStringFunc(path, func(p string) string {
			v, ok := values[strings.Trim(p, "{}")]
			require.True(t, ok, "%s: no probe value for path parameter %s", op, p)
			return v
		})
		req, err := http.NewRequest(method, url, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		resp, err := http.DefaultClient.Do(req.WithContext(ctx))
		require.NoError(t, err, op)
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
		cancel()
		fromMux := !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") &&
			(resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusMethodNotAllowed)
		if fromMux {
			t.Errorf("%s is described but the server has no such route: %d %s", op, resp.StatusCode, body)
		} else if resp.StatusCode == http.StatusNotFound && !strings.Contains(path, "{") {
			t.Errorf("%s is described but answers 404: %s", op, body)
		}
	}
}

// GET /v1/openapi.json answers the document without a key, also while the
// app waits for its services (the rest of /v1 answers 503 then).
func TestOpenAPIServedWithoutKey(t *testing.T) {
	t.Run("ready, with tenants", func(t *testing.T) {
		app := startEmbedded(t, withTenant)
		status, body := get(t, app.URL()+"/v1/tasks", "")
		require.Equal(t, http.StatusUnauthorized, status, body)
		req, err := http.NewRequest(http.MethodGet, app.URL()+"/v1/openapi.json", nil)
		require.NoError(t, err)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(b))
		require.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		require.Equal(t, contracts.OpenAPI(), b)
	})
	t.Run("not ready", func(t *testing.T) {
		cfg := DevConfig()
		cfg.Server.Addr = "127.0.0.1:0"
		cfg.Redis.URL = "redis://" + closedAddr(t) + "/0"
		cfg.Broker.URL = "amqp://guest:guest@" + closedAddr(t) + "/"
		app, err := Launch(context.Background(), cfg, Options{Logger: quietLogger()})
		require.NoError(t, err)
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			require.NoError(t, app.Shutdown(ctx))
		})
		status, body := get(t, app.URL()+"/v1/tasks", "")
		require.Equal(t, http.StatusServiceUnavailable, status, body)
		status, body = get(t, app.URL()+"/v1/openapi.json", "")
		require.Equal(t, http.StatusOK, status, body)
		require.JSONEq(t, string(contracts.OpenAPI()), body)
	})
}
