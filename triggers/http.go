package triggers

import (
	"encoding/json"
	"net/http"

	"github.com/tasklane/tasklane/contracts"
)

// WriteError answers status with {"error": msg}, as the rest of the API
// does.
func WriteError(w http.ResponseWriter, status int, msg string) {
	WriteJSON(w, status, contracts.ErrorResponse{Error: msg})
}

// WriteJSON answers status with v as JSON.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
