package triggers

import (
	"errors"

	"github.com/tasklane/tasklane/pkg/admission"
	"github.com/tasklane/tasklane/pkg/httpjson"
)

// WriteError answers status with {"error": msg}, and WriteJSON status with
// v as JSON, as the rest of the API does; WriteRefused answers a
// submission refused by backpressure (429 with Retry-After), as the
// gateway does.
var (
	WriteError   = httpjson.Error
	WriteJSON    = httpjson.Write
	WriteRefused = httpjson.Refused
)

// Refused returns the refusal when err is a submission refused by
// backpressure (the tenant's backlog is at its max_backlog, or all
// tenants' above admission.max_backlog): nothing was recorded, and the
// same events may be submitted again after its RetryAfter.
func Refused(err error) (*admission.RefusedError, bool) {
	var re *admission.RefusedError
	if errors.As(err, &re) {
		return re, true
	}
	return nil, false
}
