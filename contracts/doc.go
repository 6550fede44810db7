// Package contracts holds Tasklane's external contract: the CloudEvent types
// it emits, the extension attributes it reads, the task states and the task
// record that the HTTP API returns and result events carry.
//
// The names here are depended on by users, scripts and acceptance checks
// (README.md: HTTP API, result events): add to them, never rename them. The package depends
// on the standard library only.
//
// schema/ holds JSON Schemas (draft 2020-12) for the task record, the task
// list, the submit and error answers, a submitted event (structured and
// batch mode), a result event, the trigger list, and the admin API's
// routing table and routing change. testdata/ holds
// examples of each, and of a binary-mode submission as an HTTP request.
// contracts_test.go decodes every
// example strictly into the Go types here and checks it against its schema,
// and checks the schemas against these types.
//
// openapi.json (served at GET /v1/openapi.json, see [OpenAPI]) describes
// every HTTP route in OpenAPI 3.1, with copies of schema/'s schemas that
// openapi_test.go checks equal to the files.
package contracts
