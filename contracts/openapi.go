package contracts

import (
	_ "embed"
	"slices"
)

// openAPI is openapi.json: the OpenAPI 3.1 description of the HTTP API.
//
//go:embed openapi.json
var openAPI []byte

// OpenAPIRoute is where the server serves [OpenAPI], without a key.
const OpenAPIRoute = "GET /v1/openapi.json"

// OpenAPI returns the OpenAPI 3.1 document describing every HTTP route of
// the server (openapi.json): its parameters, request bodies, answers and
// their JSON Schemas, which are copies of schema/'s. The caller owns the
// returned slice.
func OpenAPI() []byte { return slices.Clone(openAPI) }
