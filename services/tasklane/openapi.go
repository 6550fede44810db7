package tasklane

import (
	"net/http"

	"github.com/tasklane/tasklane/contracts"
)

// serveOpenAPI answers the API's OpenAPI document (contracts.OpenAPIRoute).
// It needs no key and answers while the app starts too.
func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-cache")
	_, _ = w.Write(contracts.OpenAPI())
}

// registerOpenAPI mounts serveOpenAPI on mux.
func registerOpenAPI(mux *http.ServeMux) { mux.HandleFunc(contracts.OpenAPIRoute, serveOpenAPI) }
