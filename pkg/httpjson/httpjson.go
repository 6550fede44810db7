// Package httpjson writes the API's JSON answers: a value, or an error as
// {"error": "..."} (contracts.ErrorResponse). The gateway, the admin API
// and the trigger hooks all answer this way.
package httpjson

import (
	"encoding/json"
	"net/http"

	"github.com/tasklane/tasklane/contracts"
)

// Write answers status with v as JSON.
func Write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// Error answers status with {"error": msg}.
func Error(w http.ResponseWriter, status int, msg string) {
	Write(w, status, contracts.ErrorResponse{Error: msg})
}
