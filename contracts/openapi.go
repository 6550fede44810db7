package contracts

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
)

// openAPIFile is openapi.json: the OpenAPI 3.1 description of the HTTP
// API, whose components.schemas refer to the files in schema/.
//
//go:embed openapi.json
var openAPIFile []byte

//go:embed schema/*.schema.json
var schemaFiles embed.FS

// OpenAPIRoute is where the server serves [OpenAPI], without a key.
const OpenAPIRoute = "GET /v1/openapi.json"

// openAPIRefPrefix starts the components.schemas $refs of openapi.json
// that name a file of schema/.
const openAPIRefPrefix = "schema/"

var openAPIDoc = sync.OnceValues(buildOpenAPI)

// OpenAPI returns the OpenAPI 3.1 document describing every HTTP route of
// the server: openapi.json with each components.schemas entry that refers
// to a file of schema/ replaced by that file's schema, so the document
// stands alone. The caller owns the returned slice. It panics if the
// embedded files do not make a document, which this package's tests rule
// out.
func OpenAPI() []byte {
	b, err := openAPIDoc()
	if err != nil {
		panic("contracts: " + err.Error())
	}
	return slices.Clone(b)
}

func buildOpenAPI() ([]byte, error) {
	doc, err := decodeJSON(openAPIFile)
	if err != nil {
		return nil, fmt.Errorf("openapi.json: %w", err)
	}
	components, _ := doc.(map[string]any)["components"].(map[string]any)
	schemas, _ := components["schemas"].(map[string]any)
	for name, s := range schemas {
		m, _ := s.(map[string]any)
		ref, _ := m["$ref"].(string)
		if len(m) != 1 || !strings.HasPrefix(ref, openAPIRefPrefix) {
			continue
		}
		raw, err := schemaFiles.ReadFile(path.Clean(ref))
		if err != nil {
			return nil, fmt.Errorf("openapi.json: components.schemas.%s: %w", name, err)
		}
		if schemas[name], err = decodeJSON(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// decodeJSON decodes one JSON value, numbers kept as written.
func decodeJSON(raw []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}
