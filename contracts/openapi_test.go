package contracts_test

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// openAPIURL is where the document is loaded in the schema compiler: a
// $ref "#/components/..." resolves within it.
const openAPIURL = "https://github.com/tasklane/tasklane/raw/main/contracts/openapi.json"

func loadOpenAPI(t *testing.T) map[string]any {
	t.Helper()
	raw := contracts.OpenAPI()
	var doc any
	require.NoError(t, json.Unmarshal(raw, &doc), "openapi.json is JSON")
	m, ok := doc.(map[string]any)
	require.True(t, ok, "openapi.json is a JSON object")
	return m
}

// The document is OpenAPI 3.1 in structure: the version, info, paths of
// operations with answers, path parameters matching the templates, and
// every $ref resolving.
func TestOpenAPIIsStructurallyValid(t *testing.T) {
	doc := loadOpenAPI(t)
	require.Regexp(t, `^3\.1\.\d+$`, doc["openapi"])
	info, _ := doc["info"].(map[string]any)
	require.NotEmpty(t, info["title"], "info.title")
	require.NotEmpty(t, info["version"], "info.version")
	paths, _ := doc["paths"].(map[string]any)
	require.NotEmpty(t, paths, "paths")
	schemes, _ := doc["components"].(map[string]any)["securitySchemes"].(map[string]any)

	methods := []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}
	template := regexp.MustCompile(`\{([^{}]+)\}`)
	opIDs := map[string]string{}
	for path, v := range paths {
		require.True(t, strings.HasPrefix(path, "/"), "path %q starts with /", path)
		item := v.(map[string]any)
		want := map[string]bool{}
		for _, m := range template.FindAllStringSubmatch(path, -1) {
			want[m[1]] = true
		}
		common := pathParams(t, doc, item["parameters"])
		nOps := 0
		for key, v := range item {
			if key == "parameters" || key == "summary" || key == "description" {
				continue
			}
			require.Contains(t, methods, key, "%s: %q is not an operation", path, key)
			nOps++
			op := v.(map[string]any)
			where := strings.ToUpper(key) + " " + path
			id, _ := op["operationId"].(string)
			require.NotEmpty(t, id, "%s: operationId", where)
			require.Empty(t, opIDs[id], "%s: operationId %q is also %s's", where, id, opIDs[id])
			opIDs[id] = where
			got := map[string]bool{}
			for name := range common {
				got[name] = true
			}
			for name := range pathParams(t, doc, op["parameters"]) {
				got[name] = true
			}
			require.Equal(t, want, got, "%s: path parameters match the template", where)
			resps, _ := op["responses"].(map[string]any)
			require.NotEmpty(t, resps, "%s: responses", where)
			for code := range resps {
				n, err := strconv.Atoi(code)
				require.True(t, err == nil && n >= 100 && n < 600, "%s: status %q", where, code)
			}
			if sec, ok := op["security"].([]any); ok {
				for _, req := range sec {
					for name := range req.(map[string]any) {
						require.Contains(t, schemes, name, "%s: security scheme", where)
					}
				}
			}
		}
		require.Positive(t, nOps, "%s has operations", path)
	}
	for _, req := range doc["security"].([]any) {
		for name := range req.(map[string]any) {
			require.Contains(t, schemes, name, "security scheme")
		}
	}

	// Every $ref outside the copies of schema/ (whose refs are relative
	// to their $id) points into the document.
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			if _, ok := v["$id"]; ok {
				return
			}
			if ref, ok := v["$ref"].(string); ok {
				require.True(t, strings.HasPrefix(ref, "#/"), "%s: $ref %q is not local", at, ref)
				_, ok := pointer(doc, ref[1:])
				require.True(t, ok, "%s: $ref %q resolves", at, ref)
			}
			for k, e := range v {
				walk(e, at+"/"+k)
			}
		case []any:
			for i, e := range v {
				walk(e, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc, "")
}

// pathParams returns the names of the "in: path" parameters of list,
// each required, following $refs.
func pathParams(t *testing.T, doc map[string]any, list any) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	params, _ := list.([]any)
	for _, p := range params {
		pm := p.(map[string]any)
		if ref, ok := pm["$ref"].(string); ok {
			v, ok := pointer(doc, strings.TrimPrefix(ref, "#"))
			require.True(t, ok, "parameter $ref %q resolves", ref)
			pm = v.(map[string]any)
		}
		require.NotEmpty(t, pm["name"], "parameter name")
		require.Contains(t, []any{"path", "query", "header", "cookie"}, pm["in"], "parameter %v: in", pm["name"])
		if pm["in"] == "path" {
			require.Equal(t, true, pm["required"], "path parameter %v is required", pm["name"])
			out[pm["name"].(string)] = true
		}
	}
	return out
}

// pointer follows the JSON pointer ptr ("/a/b") from v.
func pointer(v any, ptr string) (any, bool) {
	if ptr == "" {
		return v, true
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch x := v.(type) {
		case map[string]any:
			e, ok := x[tok]
			if !ok {
				return nil, false
			}
			v = e
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// The schemas the document uses for the contract's records are the files
// in schema/: openapi.json refers to each file once from
// components.schemas, and the served document has the file's schema there.
func TestOpenAPISchemasAreTheContractSchemas(t *testing.T) {
	onDisk := readJSON(t, "openapi.json").(map[string]any)
	refs := map[string]string{} // file → components.schemas name
	for name, s := range onDisk["components"].(map[string]any)["schemas"].(map[string]any) {
		if ref, ok := s.(map[string]any)["$ref"].(string); ok {
			require.Len(t, s, 1, "components.schemas.%s: a $ref alone", name)
			require.Empty(t, refs[ref], "components.schemas.%s: %s is also %s", name, ref, refs[ref])
			refs[ref] = name
		}
	}
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.schema.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	served := loadOpenAPI(t)["components"].(map[string]any)["schemas"].(map[string]any)
	for _, f := range files {
		ref := filepath.ToSlash(f)
		name, ok := refs[ref]
		require.True(t, ok, "openapi.json: components.schemas has no {\"$ref\": %q}", ref)
		delete(refs, ref)
		require.Equal(t, readJSON(t, f), served[name], "the served components.schemas.%s is %s", name, f)
	}
	require.Empty(t, refs, "openapi.json refers to files that %s does not have", schemaDir)
}

// Every schema in the document compiles as JSON Schema 2020-12, its
// $refs (to components and between the copies of schema/) resolved.
func TestOpenAPISchemasCompile(t *testing.T) {
	doc := loadOpenAPI(t)
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	require.NoError(t, c.AddResource(openAPIURL, doc))
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.schema.json"))
	require.NoError(t, err)
	for _, f := range files {
		v := readJSON(t, f)
		require.NoError(t, c.AddResource(v.(map[string]any)["$id"].(string), v))
	}
	var locs []string
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch v := v.(type) {
		case map[string]any:
			for k, e := range v {
				kp := at + "/" + strings.ReplaceAll(strings.ReplaceAll(k, "~", "~0"), "/", "~1")
				if k == "schema" {
					locs = append(locs, kp)
					continue
				}
				walk(e, kp)
			}
		case []any:
			for i, e := range v {
				walk(e, at+"/"+strconv.Itoa(i))
			}
		}
	}
	walk(doc["paths"], "/paths")
	walk(doc["components"].(map[string]any)["responses"], "/components/responses")
	for name := range doc["components"].(map[string]any)["schemas"].(map[string]any) {
		locs = append(locs, "/components/schemas/"+name)
	}
	sort.Strings(locs)
	require.Greater(t, len(locs), 20)
	for _, loc := range locs {
		_, err := c.Compile(openAPIURL + "#" + loc)
		require.NoError(t, err, "schema at %s", loc)
	}
	// The compiled schemas check what they describe: a task list example
	// passes the list answer's schema and an error answer does not.
	list, err := c.Compile(openAPIURL + "#/paths/~1v1~1tasks/get/responses/200/content/application~1json/schema")
	require.NoError(t, err)
	require.NoError(t, list.Validate(readJSON(t, filepath.Join(testdataDir, "task-list.json"))))
	require.Error(t, list.Validate(readJSON(t, filepath.Join(testdataDir, "error-response.json"))))
}

// GET /v1/tasks takes the filters the gateway reads, /healthz answers the
// version: the parts of the document other changes rely on.
func TestOpenAPIDescribesTaskFiltersAndVersion(t *testing.T) {
	doc := loadOpenAPI(t)
	op, ok := pointer(doc, "/paths/~1v1~1tasks/get/parameters")
	require.True(t, ok)
	var names []string
	for _, p := range op.([]any) {
		names = append(names, p.(map[string]any)["name"].(string))
	}
	for _, want := range []string{"state", "function", "event_id", "source", "cursor", "limit"} {
		require.True(t, slices.Contains(names, want), "GET /v1/tasks takes %s", want)
	}
	_, ok = pointer(doc, "/components/schemas/Health/properties/version")
	require.True(t, ok, "/healthz answers the version")
	var out bytes.Buffer
	require.NoError(t, json.Indent(&out, contracts.OpenAPI(), "", "  "), "valid JSON")
}
