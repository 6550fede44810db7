package triggers

import "github.com/tasklane/tasklane/pkg/httpjson"

// WriteError answers status with {"error": msg}, and WriteJSON status with
// v as JSON, as the rest of the API does.
var (
	WriteError = httpjson.Error
	WriteJSON  = httpjson.Write
)
