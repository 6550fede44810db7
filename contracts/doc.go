// Package contracts holds Tasklane's external contract: the CloudEvent types
// it emits, the extension attributes it reads, the task states and the task
// record that the HTTP API returns and result events carry.
//
// The names here are depended on by users, scripts and acceptance checks
// (DESIGN.md section 3): add to them, never rename them. The package depends
// on the standard library only; JSON Schemas for the task record and the
// result event live in schema/, example events in testdata/.
package contracts
