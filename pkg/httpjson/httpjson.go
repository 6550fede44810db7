// Package httpjson writes the API's JSON answers: a value, or an error as
// {"error": "..."} (contracts.ErrorResponse). The gateway, the admin API
// and the trigger hooks all answer this way.
package httpjson

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/tasklane/tasklane/contracts"
	"github.com/tasklane/tasklane/pkg/admission"
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

// Refused answers a submission refused by backpressure: 429 with
// Retry-After (whole seconds) and {"error", "tenant", "backlog", "limit",
// "reason"}. The gateway and the trigger hooks answer it alike.
func Refused(w http.ResponseWriter, e *admission.RefusedError) {
	w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfterSeconds()))
	Write(w, http.StatusTooManyRequests, e.Response())
}
