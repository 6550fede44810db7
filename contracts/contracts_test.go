package contracts_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/contracts"
)

// The examples are validated against the schemas with
// github.com/santhosh-tekuri/jsonschema (draft 2020-12, formats asserted) and
// decoded strictly into the Go types; the compiled schemas are also compared
// with the Go types field by field.

const (
	schemaDir   = "schema"
	testdataDir = "testdata"
	draft202012 = "https://json-schema.org/draft/2020-12/schema"
	schemaIDDir = "https://github.com/tasklane/tasklane/raw/main/contracts/schema/"
)

// resultEvent is a result event in structured mode, as the CloudEvents SDK
// writes it for notifier.ResultEvent.
type resultEvent struct {
	SpecVersion     string         `json:"specversion"`
	ID              string         `json:"id"`
	Source          string         `json:"source"`
	Type            string         `json:"type"`
	Subject         string         `json:"subject"`
	DataContentType string         `json:"datacontenttype"`
	Time            string         `json:"time,omitempty"`
	TenantID        string         `json:"tenantid"`
	Data            contracts.Task `json:"data"`
}

// submittedEvent is a structured-mode event as a client submits it, with
// exactly the attributes submitted-event.schema.json documents. Extension
// values stay raw: they may be numbers or strings.
type submittedEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            string          `json:"time,omitempty"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	DataSchema      string          `json:"dataschema,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
	DataBase64      string          `json:"data_base64,omitempty"`
	Priority        json.RawMessage `json:"priority,omitempty"`
	Delay           json.RawMessage `json:"delay,omitempty"`
	DeliverAt       string          `json:"deliverat,omitempty"`
	TTL             json.RawMessage `json:"ttl,omitempty"`
	ExpiresAt       string          `json:"expiresat,omitempty"`
	TraceParent     string          `json:"traceparent,omitempty"`
	TraceState      string          `json:"tracestate,omitempty"`
	Batch           string          `json:"batch,omitempty"`
	TenantID        string          `json:"tenantid,omitempty"`
}

// example ties a testdata file to its schema and Go type.
type example struct {
	file   string
	schema string
	newV   func() any // a pointer to decode into
}

var examples = []example{
	{"task-running.json", "task.schema.json", func() any { return new(contracts.Task) }},
	{"task-dead-dlq-show.json", "task.schema.json", func() any { return new(contracts.Task) }},
	{"task-list.json", "task-list.schema.json", func() any { return new(contracts.TaskList) }},
	{"submit-response.json", "submit-response.schema.json", func() any { return new(contracts.SubmitResponse) }},
	{"error-response.json", "error-response.schema.json", func() any { return new(contracts.ErrorResponse) }},
	{"result-succeeded.json", "result-event.schema.json", func() any { return new(resultEvent) }},
	{"result-failed.json", "result-event.schema.json", func() any { return new(resultEvent) }},
	{"result-expired.json", "result-event.schema.json", func() any { return new(resultEvent) }},
	{"submitted-structured.json", "submitted-event.schema.json", func() any { return new(submittedEvent) }},
	{"submitted-batch.json", "submitted-batch.schema.json", func() any { return new([]submittedEvent) }},
	{"trigger-list.json", "trigger-list.schema.json", func() any { return new(contracts.TriggerList) }},
	{"routing.json", "routing.schema.json", func() any { return new(contracts.RoutingView) }},
	{"routing-change.json", "routing-change.schema.json", func() any { return new(contracts.RoutingChange) }},
	{"functions.json", "functions.schema.json", func() any { return new(contracts.FunctionsView) }},
}

const binaryExample = "submitted-binary-headers.txt"

var ulidRE = regexp.MustCompile(`^[0-9A-HJKMNP-TV-Z]{26}$`)

func TestEveryTestdataFileIsChecked(t *testing.T) {
	entries, err := os.ReadDir(testdataDir)
	require.NoError(t, err)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	want := []string{binaryExample}
	for _, ex := range examples {
		want = append(want, ex.file)
	}
	require.ElementsMatch(t, want, got, "every file in testdata/ needs an entry in examples (and the reverse)")
}

func TestSchemaFilesAreWellFormed(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.json"))
	require.NoError(t, err)
	require.NotEmpty(t, files)
	vocab := compileVocabulary(t)
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			require.True(t, strings.HasSuffix(name, ".schema.json"), "schema files are named *.schema.json")
			doc, ok := readJSON(t, f).(map[string]any)
			require.True(t, ok, "a schema file holds a JSON object")
			require.Equal(t, draft202012, doc["$schema"])
			require.Equal(t, schemaIDDir+name, doc["$id"])
			require.NotEmpty(t, doc["title"])
			require.NotEmpty(t, doc["description"])
			// Compiling checks the schema against the draft 2020-12
			// meta-schema, resolves every $ref and compiles every pattern.
			schema(t, name)
			delete(doc, "$schema") // only allowed at the root
			delete(doc, "$id")
			require.NoError(t, vocab.Validate(doc))
		})
	}
}

func TestTaskSchemaMatchesGoTypes(t *testing.T) {
	checks := []struct {
		loc string
		typ reflect.Type
	}{
		{"task.schema.json", reflect.TypeFor[contracts.Task]()},
		{"task.schema.json#/$defs/eventRef", reflect.TypeFor[contracts.EventRef]()},
		{"task-list.schema.json", reflect.TypeFor[contracts.TaskList]()},
		{"submit-response.schema.json", reflect.TypeFor[contracts.SubmitResponse]()},
		{"submit-response.schema.json#/$defs/submittedTask", reflect.TypeFor[contracts.SubmittedTask]()},
		{"error-response.schema.json", reflect.TypeFor[contracts.ErrorResponse]()},
		// The test's own mirror of the submitted event must cover exactly what
		// the schema documents, so decoding examples into it is meaningful.
		{"submitted-event.schema.json", reflect.TypeFor[submittedEvent]()},
		{"result-event.schema.json", reflect.TypeFor[resultEvent]()},
		{"trigger-list.schema.json", reflect.TypeFor[contracts.TriggerList]()},
		{"trigger-list.schema.json#/$defs/trigger", reflect.TypeFor[contracts.TriggerView]()},
		{"routing.schema.json", reflect.TypeFor[contracts.RoutingView]()},
		{"routing.schema.json#/$defs/lane", reflect.TypeFor[contracts.LaneView]()},
		{"routing.schema.json#/$defs/tenant", reflect.TypeFor[contracts.TenantPlacement]()},
		{"routing-change.schema.json", reflect.TypeFor[contracts.RoutingChange]()},
		{"functions.schema.json", reflect.TypeFor[contracts.FunctionsView]()},
		{"functions.schema.json#/$defs/function", reflect.TypeFor[contracts.FunctionView]()},
		{"functions.schema.json#/$defs/ready", reflect.TypeFor[contracts.ReadyBands]()},
	}
	for _, c := range checks {
		t.Run(c.loc+"="+c.typ.Name(), func(t *testing.T) {
			checkGoType(t, schema(t, c.loc), c.typ, c.typ.Name())
		})
	}
}

func TestTaskSchemaStates(t *testing.T) {
	var all, terminal []any
	for _, s := range contracts.States {
		all = append(all, string(s))
		if s.Terminal() {
			terminal = append(terminal, string(s))
		}
	}
	state := deref(schema(t, "task.schema.json").Properties["state"])
	require.Equal(t, all, state.Enum.Values, "state enum (in life order) vs contracts.States")
	require.ElementsMatch(t, terminal, schema(t, "task.schema.json#/$defs/terminalState").Enum.Values)

	// The result event schema admits a state exactly when it is terminal,
	// and then only with the matching type.
	result := schema(t, "result-event.schema.json")
	ev := readJSON(t, testdataDir, "result-succeeded.json")
	for _, s := range contracts.States {
		for _, typ := range contracts.States {
			e := mutate(ev, map[string]any{"type": typ.ResultType(), "data/state": string(s), "id": "01KH616V3P51RE4RG2NPX555N3." + string(s)})
			if s == typ && s.Terminal() {
				require.NoError(t, result.Validate(e), "state %s type %s", s, typ.ResultType())
			} else {
				require.Error(t, result.Validate(e), "state %s type %s", s, typ.ResultType())
			}
		}
	}
}

func TestRoutingSchemaEnums(t *testing.T) {
	kind := deref(schema(t, "routing.schema.json#/$defs/lane").Properties["kind"])
	require.Equal(t, []any{contracts.LaneShared, contracts.LaneDedicated, contracts.LaneRetiring}, kind.Enum.Values)
	action := deref(schema(t, "routing-change.schema.json").Properties["action"])
	require.Equal(t, []any{contracts.ActionSplit, contracts.ActionMerge, contracts.ActionDelete}, action.Enum.Values)
}

func TestSubmittedEventSchemaDocumentsExtensions(t *testing.T) {
	props := schema(t, "submitted-event.schema.json").Properties
	for _, ext := range []string{
		contracts.ExtPriority, contracts.ExtDelay, contracts.ExtDeliverAt, contracts.ExtTTL,
		contracts.ExtExpiresAt, contracts.ExtTraceParent, contracts.ExtTraceState, contracts.ExtTenantID, contracts.ExtBatch,
	} {
		require.Contains(t, props, ext)
	}
	maxPrio := deref(props[contracts.ExtPriority]).OneOf[0].Maximum
	require.NotNil(t, maxPrio)
	require.Equal(t, strconv.Itoa(contracts.MaxPriority), maxPrio.RatString())
}

func TestExamplesDecodeIntoGoTypes(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(testdataDir, ex.file))
			require.NoError(t, err)
			v := ex.newV()
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			require.NoError(t, dec.Decode(v), "example and Go type disagree")
			require.False(t, dec.More(), "trailing data after the JSON value")
			_, err = dec.Token()
			require.ErrorIs(t, err, io.EOF, "trailing data after the JSON value")
			// Everything in the examples survives a round trip: no field is
			// lost, renamed or reformatted by the Go types.
			out, err := json.Marshal(v)
			require.NoError(t, err)
			require.JSONEq(t, string(raw), string(out))
		})
	}
}

func TestExamplesMatchSchemas(t *testing.T) {
	for _, ex := range examples {
		t.Run(ex.file, func(t *testing.T) {
			require.NoError(t, schema(t, ex.schema).Validate(readJSON(t, testdataDir, ex.file)))
		})
	}
}

func TestTaskExamples(t *testing.T) {
	var tasks []contracts.Task
	for _, ex := range examples {
		raw, err := os.ReadFile(filepath.Join(testdataDir, ex.file))
		require.NoError(t, err)
		switch p := ex.newV().(type) {
		case *contracts.Task:
			require.NoError(t, json.Unmarshal(raw, p))
			tasks = append(tasks, *p)
		case *contracts.TaskList:
			require.NoError(t, json.Unmarshal(raw, p))
			tasks = append(tasks, p.Tasks...)
		case *resultEvent:
			require.NoError(t, json.Unmarshal(raw, p))
			tasks = append(tasks, p.Data)
		case *contracts.SubmitResponse:
			require.NoError(t, json.Unmarshal(raw, p))
			for _, st := range p.Tasks {
				require.Regexp(t, ulidRE, st.ID, ex.file)
				require.True(t, st.State.Valid(), ex.file)
			}
		}
	}
	require.NotEmpty(t, tasks)
	for _, tk := range tasks {
		require.Regexp(t, ulidRE, tk.ID)
		require.True(t, tk.State.Valid(), tk.ID)
		require.Equal(t, tk.State.Terminal(), tk.FinishedAt != nil, "%s: finished_at is set exactly when the task has ended", tk.ID)
		require.Equal(t, tk.Attempts > 0, tk.StartedAt != nil, "%s: started_at is set once an attempt started", tk.ID)
		if tk.StartedAt != nil {
			require.False(t, tk.StartedAt.Before(tk.CreatedAt), tk.ID)
		}
		if tk.FinishedAt != nil {
			require.False(t, tk.FinishedAt.Before(tk.CreatedAt), tk.ID)
		}
		require.GreaterOrEqual(t, tk.Priority, 0)
		require.LessOrEqual(t, tk.Priority, contracts.MaxPriority)
	}
}

func TestResultExamplesAgreeWithTheirTask(t *testing.T) {
	n := 0
	for _, ex := range examples {
		if !strings.HasPrefix(ex.file, "result-") {
			continue
		}
		n++
		t.Run(ex.file, func(t *testing.T) {
			var e resultEvent
			raw, err := os.ReadFile(filepath.Join(testdataDir, ex.file))
			require.NoError(t, err)
			require.NoError(t, json.Unmarshal(raw, &e))
			task := e.Data
			require.True(t, task.State.Terminal(), "a result event carries a task that has ended")
			require.Equal(t, task.State.ResultType(), e.Type, "type vs data.state")
			require.Equal(t, "result-"+string(task.State)+".json", ex.file)
			require.True(t, strings.HasPrefix(e.Type, contracts.ResultTypePrefix))
			require.Equal(t, task.ID+"."+string(task.State), e.ID)
			require.Equal(t, task.ID, e.Subject)
			require.Equal(t, contracts.ResultSourcePrefix+task.Function, e.Source)
			require.Equal(t, task.Tenant, e.TenantID)
			require.Equal(t, "application/json", e.DataContentType)
			require.NotNil(t, task.FinishedAt)
			at, err := time.Parse(time.RFC3339Nano, e.Time)
			require.NoError(t, err)
			require.True(t, at.Equal(*task.FinishedAt), "time vs data.finished_at")
		})
	}
	require.GreaterOrEqual(t, n, 2)
}

func TestBinaryModeExample(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(testdataDir, binaryExample))
	require.NoError(t, err)
	r := bufio.NewReader(bytes.NewReader(raw))
	req, err := http.ReadRequest(r)
	require.NoError(t, err)
	body, err := io.ReadAll(req.Body)
	require.NoError(t, err)
	rest, _ := io.ReadAll(r)
	require.Empty(t, rest, "Content-Length must cover the whole body")
	require.EqualValues(t, len(body), req.ContentLength)

	require.Equal(t, http.MethodPost, req.Method)
	require.Equal(t, "/v1/events", req.URL.Path)
	require.True(t, strings.HasPrefix(req.Header.Get("Authorization"), "Bearer "))

	// The binary-mode headers make the same event as structured mode.
	ev := map[string]any{}
	for name, vals := range req.Header {
		lower := strings.ToLower(name)
		if attr, ok := strings.CutPrefix(lower, "ce-"); ok {
			require.Len(t, vals, 1, name)
			ev[attr] = vals[0]
		}
	}
	ct := req.Header.Get("Content-Type")
	require.NotEmpty(t, ct)
	ev["datacontenttype"] = ct
	require.Equal(t, "application/json", ct)
	var data any
	require.NoError(t, json.Unmarshal(body, &data), "the body of this example is JSON")
	ev["data"] = data
	for _, attr := range []string{"specversion", "id", "source", "type", contracts.ExtPriority, contracts.ExtTTL, contracts.ExtTraceParent} {
		require.Contains(t, ev, attr)
	}

	require.NoError(t, schema(t, "submitted-event.schema.json").Validate(ev))
	enc, err := json.Marshal(ev)
	require.NoError(t, err)
	var se submittedEvent
	dec := json.NewDecoder(bytes.NewReader(enc))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&se))
}

// TestSchemasRefuse checks that the schemas say no where the server does.
// Each case changes an example and validates it against that example's
// schema.
func TestSchemasRefuse(t *testing.T) {
	cases := []struct {
		name   string
		file   string
		change map[string]any // path -> new value; deleteIt deletes
		ok     bool
	}{
		{"task as is", "task-running.json", nil, true},
		{"task unknown state", "task-running.json", map[string]any{"state": "done"}, false},
		{"task priority 10", "task-running.json", map[string]any{"priority": 10}, false},
		{"task priority -1", "task-running.json", map[string]any{"priority": -1}, false},
		{"task priority string", "task-running.json", map[string]any{"priority": "5"}, false},
		{"task attempts fraction", "task-running.json", map[string]any{"attempts": 1.5}, false},
		{"task no created_at", "task-running.json", map[string]any{"created_at": deleteIt}, false},
		{"task bad time", "task-running.json", map[string]any{"started_at": "2026-02-11 10:03:15"}, false},
		{"task null optional", "task-running.json", map[string]any{"finished_at": nil}, false},
		{"task event without source", "task-running.json", map[string]any{"event/source": deleteIt}, false},
		{"task any result", "task-running.json", map[string]any{"result": "plain text"}, true},
		{"task later field", "task-running.json", map[string]any{"lane": 3}, true},

		{"result as is", "result-failed.json", nil, true},
		{"result type vs state", "result-failed.json", map[string]any{"type": contracts.TypeTaskSucceeded}, false},
		{"result running", "result-failed.json", map[string]any{"type": "io.tasklane.task.running", "data/state": "running"}, false},
		{"result source", "result-failed.json", map[string]any{"source": "/functions/daily-report"}, false},
		{"result specversion", "result-failed.json", map[string]any{"specversion": "0.3"}, false},
		{"result no tenantid", "result-failed.json", map[string]any{"tenantid": deleteIt}, false},
		{"result no subject", "result-failed.json", map[string]any{"subject": deleteIt}, false},
		{"result data not a task", "result-failed.json", map[string]any{"data/created_at": deleteIt}, false},
		{"result datacontenttype", "result-failed.json", map[string]any{"datacontenttype": "text/plain"}, false},

		{"submitted as is", "submitted-structured.json", nil, true},
		{"submitted priority 0", "submitted-structured.json", map[string]any{"priority": 0}, true},
		{"submitted priority \"9\"", "submitted-structured.json", map[string]any{"priority": "9"}, true},
		{"submitted priority 10", "submitted-structured.json", map[string]any{"priority": 10}, false},
		{"submitted priority \"12\"", "submitted-structured.json", map[string]any{"priority": "12"}, false},
		{"submitted priority high", "submitted-structured.json", map[string]any{"priority": "high"}, false},
		{"submitted priority 4.5", "submitted-structured.json", map[string]any{"priority": 4.5}, false},
		{"submitted delay and deliverat", "submitted-structured.json", map[string]any{"delay": 30}, false},
		{"submitted delay", "submitted-structured.json", map[string]any{"deliverat": deleteIt, "delay": "30"}, true},
		{"submitted delay -1", "submitted-structured.json", map[string]any{"deliverat": deleteIt, "delay": -1}, false},
		{"submitted delay over a year", "submitted-structured.json", map[string]any{"deliverat": deleteIt, "delay": 31536001}, false},
		{"submitted deliverat not a time", "submitted-structured.json", map[string]any{"deliverat": "tomorrow"}, false},
		{"submitted ttl and expiresat", "submitted-structured.json", map[string]any{"ttl": 60}, false},
		{"submitted ttl 1", "submitted-structured.json", map[string]any{"expiresat": deleteIt, "ttl": 1}, true},
		{"submitted ttl 0", "submitted-structured.json", map[string]any{"expiresat": deleteIt, "ttl": 0}, false},
		{"submitted ttl \"0\"", "submitted-structured.json", map[string]any{"expiresat": deleteIt, "ttl": "0"}, false},
		{"submitted bad traceparent", "submitted-structured.json", map[string]any{"traceparent": "00-xyz"}, false},
		{"submitted no id", "submitted-structured.json", map[string]any{"id": deleteIt}, false},
		{"submitted no source", "submitted-structured.json", map[string]any{"source": deleteIt}, false},
		{"submitted no type", "submitted-structured.json", map[string]any{"type": deleteIt}, false},
		{"submitted no specversion", "submitted-structured.json", map[string]any{"specversion": deleteIt}, false},
		{"submitted empty id", "submitted-structured.json", map[string]any{"id": ""}, false},
		{"submitted data and data_base64", "submitted-structured.json", map[string]any{"data_base64": "e30="}, false},
		{"submitted other extension", "submitted-structured.json", map[string]any{"comexampleregion": "eu-west-1"}, true},
		{"submitted bad extension name", "submitted-structured.json", map[string]any{"example-region": "eu-west-1"}, false},
		{"submitted uppercase extension name", "submitted-structured.json", map[string]any{"Region": "eu-west-1"}, false},

		{"submit response as is", "submit-response.json", nil, true},
		{"submit response no duplicate", "submit-response.json", map[string]any{"tasks/0/duplicate": deleteIt}, false},
		{"submit response bad state", "submit-response.json", map[string]any{"tasks/1/state": "accepted"}, false},
		{"submit response no tasks", "submit-response.json", map[string]any{"tasks": []any{}}, false},
		{"error response empty", "error-response.json", map[string]any{"error": ""}, false},
		{"error response not a string", "error-response.json", map[string]any{"error": map[string]any{"code": 400}}, false},
		{"task list bad entry", "task-list.json", map[string]any{"tasks/1/state": "gone"}, false},
		{"task list last page", "task-list.json", map[string]any{"next_cursor": deleteIt}, true},
		{"batch bad entry", "submitted-batch.json", map[string]any{"1/priority": "11"}, false},

		{"trigger list as is", "trigger-list.json", nil, true},
		{"trigger list empty", "trigger-list.json", map[string]any{"triggers": []any{}}, true},
		{"trigger list no triggers", "trigger-list.json", map[string]any{"triggers": deleteIt}, false},
		{"trigger unknown kind", "trigger-list.json", map[string]any{"triggers/0/kind": "timer"}, false},
		{"trigger unknown state", "trigger-list.json", map[string]any{"triggers/0/state": "paused"}, false},
		{"trigger standby", "trigger-list.json", map[string]any{"triggers/0/state": "standby"}, true},
		{"trigger no state", "trigger-list.json", map[string]any{"triggers/0/state": deleteIt}, false},
		{"trigger no fires", "trigger-list.json", map[string]any{"triggers/2/fires": deleteIt}, false},
		{"trigger fires -1", "trigger-list.json", map[string]any{"triggers/2/fires": -1}, false},
		{"trigger bad time", "trigger-list.json", map[string]any{"triggers/0/next_fire": "tomorrow"}, false},
		{"trigger path not a hook", "trigger-list.json", map[string]any{"triggers/1/path": "signup"}, false},
		{"trigger unknown mode", "trigger-list.json", map[string]any{"triggers/2/mode": "push"}, false},
		{"trigger later field", "trigger-list.json", map[string]any{"triggers/0/lag_ms": 12}, true},

		{"routing as is", "routing.json", nil, true},
		{"routing no changes yet", "routing.json", map[string]any{"version": 0, "changes": []any{}}, true},
		{"routing no lanes", "routing.json", map[string]any{"lanes": []any{}}, false},
		{"routing no tenants", "routing.json", map[string]any{"tenants": deleteIt}, false},
		{"routing version -1", "routing.json", map[string]any{"version": -1}, false},
		{"routing unknown lane kind", "routing.json", map[string]any{"lanes/0/kind": "hot"}, false},
		{"routing negative backlog", "routing.json", map[string]any{"lanes/3/backlog": -1}, false},
		{"routing lane no consumers", "routing.json", map[string]any{"lanes/0/consumers": deleteIt}, false},
		{"routing tenant empty shard", "routing.json", map[string]any{"tenants/1/shard": []any{}}, false},
		{"routing tenant no shard", "routing.json", map[string]any{"tenants/1/shard": deleteIt}, false},
		{"routing bad change", "routing.json", map[string]any{"changes/0/action": "move"}, false},
		{"routing later field", "routing.json", map[string]any{"lanes/0/oldest_ms": 12}, true},
		{"routing change as is", "routing-change.json", nil, true},
		{"routing change unknown action", "routing-change.json", map[string]any{"action": "pin"}, false},
		{"routing change no reason", "routing-change.json", map[string]any{"reason": deleteIt}, false},
		{"routing change bad time", "routing-change.json", map[string]any{"at": "now"}, false},
		{"routing change version 0", "routing-change.json", map[string]any{"version": 0}, false},
		{"routing change delete", "routing-change.json", map[string]any{"action": "delete", "tenant": "", "pinned": deleteIt}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			i := slices.IndexFunc(examples, func(ex example) bool { return ex.file == c.file })
			require.GreaterOrEqual(t, i, 0, "%s is not in examples", c.file)
			err := schema(t, examples[i].schema).Validate(mutate(readJSON(t, testdataDir, c.file), c.change))
			if c.ok {
				require.NoError(t, err)
			} else {
				require.Error(t, err)
			}
		})
	}
}

func TestSchemaBatchAndSubmitted(t *testing.T) {
	// Every element of the batch example is a valid event on its own, and
	// the batch exercises the numeric-string forms of the extensions.
	event := schema(t, "submitted-event.schema.json")
	batch := readJSON(t, testdataDir, "submitted-batch.json").([]any)
	require.GreaterOrEqual(t, len(batch), 2)
	sawString, sawNumber := false, false
	for i, e := range batch {
		require.NoError(t, event.Validate(e), "batch[%d]", i)
		switch e.(map[string]any)[contracts.ExtPriority].(type) {
		case string:
			sawString = true
		case float64:
			sawNumber = true
		}
	}
	require.True(t, sawString && sawNumber, "the batch shows priority as a number and as a string")
}

func TestState(t *testing.T) {
	cases := []struct {
		s        contracts.State
		valid    bool
		terminal bool
		result   string
	}{
		{contracts.StateScheduled, true, false, ""},
		{contracts.StateQueued, true, false, ""},
		{contracts.StateRunning, true, false, ""},
		{contracts.StateRetrying, true, false, ""},
		{contracts.StatePaused, true, false, ""},
		{contracts.StateSucceeded, true, true, contracts.TypeTaskSucceeded},
		{contracts.StateFailed, true, true, contracts.TypeTaskFailed},
		{contracts.StateDead, true, true, contracts.TypeTaskDead},
		{contracts.StateCancelled, true, true, contracts.TypeTaskCancelled},
		{contracts.StateExpired, true, true, contracts.TypeTaskExpired},
		{"", false, false, ""},
		{"done", false, false, ""},
		{"Succeeded", false, false, ""},
		{"succeeded ", false, false, ""},
	}
	seen := map[contracts.State]bool{}
	for _, c := range cases {
		t.Run(string(c.s), func(t *testing.T) {
			require.Equal(t, c.valid, c.s.Valid())
			require.Equal(t, c.terminal, c.s.Terminal())
			if c.result != "" {
				require.Equal(t, c.result, c.s.ResultType())
				require.Equal(t, contracts.ResultTypePrefix+string(c.s), c.s.ResultType())
			}
		})
		if c.valid {
			seen[c.s] = true
		}
	}
	require.Len(t, contracts.States, len(seen), "every state has a case, and States has no duplicates")
	for _, s := range contracts.States {
		require.True(t, seen[s], "no case for %s", s)
	}
}

// --- helpers ---

// schema compiles loc, a schema file name with an optional #fragment. Every
// file is registered under its $id, against which the file names in $refs
// resolve, so nothing is fetched.
func schema(t *testing.T, loc string) *jsonschema.Schema {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(schemaDir, "*.json"))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for _, f := range files {
		require.NoError(t, c.AddResource(schemaIDDir+filepath.Base(f), readJSON(t, f)))
	}
	s, err := c.Compile(schemaIDDir + loc)
	require.NoError(t, err)
	return s
}

// vocabulary admits only the keywords the schemas use, since JSON Schema
// ignores a misspelt keyword or format; add to it when a schema needs more.
// It also requires $refs to name sibling files by file name.
const vocabulary = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "$ref": "#/$defs/schema",
  "$defs": {
    "schema": {
      "type": ["object", "boolean"],
      "propertyNames": {"enum": [
        "$comment", "$defs", "$ref", "title", "description", "examples", "default", "deprecated",
        "contentEncoding", "contentMediaType", "type", "enum", "const", "required", "properties",
        "additionalProperties", "propertyNames", "items", "minItems", "maxItems", "pattern", "format",
        "minLength", "maxLength", "minimum", "maximum", "allOf", "anyOf", "oneOf", "not"
      ]},
      "properties": {
        "$ref": {"pattern": "^[^#/:]*(#.*)?$"},
        "format": {"enum": ["date-time", "uri", "uri-reference"]},
        "$defs": {"additionalProperties": {"$ref": "#/$defs/schema"}},
        "properties": {"additionalProperties": {"$ref": "#/$defs/schema"}},
        "additionalProperties": {"$ref": "#/$defs/schema"},
        "propertyNames": {"$ref": "#/$defs/schema"},
        "items": {"$ref": "#/$defs/schema"},
        "not": {"$ref": "#/$defs/schema"},
        "allOf": {"items": {"$ref": "#/$defs/schema"}},
        "anyOf": {"items": {"$ref": "#/$defs/schema"}},
        "oneOf": {"items": {"$ref": "#/$defs/schema"}}
      }
    }
  }
}`

func compileVocabulary(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(vocabulary))
	require.NoError(t, err)
	c := jsonschema.NewCompiler()
	require.NoError(t, c.AddResource("vocabulary.json", doc))
	s, err := c.Compile("vocabulary.json")
	require.NoError(t, err)
	return s
}

// deref follows $refs. Keywords beside a $ref are ignored: the Go types are
// compared with the referenced schema.
func deref(s *jsonschema.Schema) *jsonschema.Schema {
	for s.Ref != nil {
		s = s.Ref
	}
	return s
}

func readJSON(t *testing.T, path ...string) any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(path...))
	require.NoError(t, err)
	var v any
	require.NoError(t, json.Unmarshal(raw, &v), path)
	return v
}

// deleteIt as a value in mutate removes the key.
var deleteIt = &struct{ _ byte }{}

// mutate returns a deep copy of doc with each slash-separated path set to
// its value (or deleted). Array elements are addressed by index.
func mutate(doc any, changes map[string]any) any {
	raw, err := json.Marshal(doc)
	if err != nil {
		panic(err)
	}
	var cp any
	if err := json.Unmarshal(raw, &cp); err != nil {
		panic(err)
	}
	for path, val := range changes {
		keys := strings.Split(path, "/")
		node := cp
		for _, k := range keys[:len(keys)-1] {
			if l, ok := node.([]any); ok {
				i, err := strconv.Atoi(k)
				if err != nil {
					panic(err)
				}
				node = l[i]
			} else {
				node = node.(map[string]any)[k]
			}
		}
		m, last := node.(map[string]any), keys[len(keys)-1]
		if val == deleteIt {
			delete(m, last)
		} else {
			m[last] = val
		}
	}
	return cp
}

var (
	timeType = reflect.TypeFor[time.Time]()
	rawType  = reflect.TypeFor[json.RawMessage]()
)

// checkGoType requires the schema s to describe values of Go type gt: for a
// struct, exactly its JSON fields as properties, those without omitempty or
// omitzero required.
func checkGoType(t *testing.T, s *jsonschema.Schema, gt reflect.Type, what string) {
	t.Helper()
	require.NotNil(t, s, "%s: no schema", what)
	s = deref(s)
	if gt.Kind() == reflect.Pointer {
		gt = gt.Elem()
	}
	var typ []string
	if s.Types != nil {
		typ = s.Types.ToStrings()
	}
	switch {
	case gt == timeType:
		require.Equal(t, []string{"string"}, typ, what)
		require.NotNil(t, s.Format, "%s: no format", what)
		require.Equal(t, "date-time", s.Format.Name, what)
	case gt == rawType:
		require.Nil(t, typ, "%s: raw JSON may be any value", what)
	case gt.Kind() == reflect.String && typ == nil && s.Const != nil:
		require.IsType(t, "", *s.Const, what)
	case gt.Kind() == reflect.String:
		require.Equal(t, []string{"string"}, typ, what)
	case gt.Kind() == reflect.Bool:
		require.Equal(t, []string{"boolean"}, typ, what)
	case gt.Kind() >= reflect.Int && gt.Kind() <= reflect.Int64:
		require.Equal(t, []string{"integer"}, typ, what)
	case gt.Kind() == reflect.Slice:
		require.Equal(t, []string{"array"}, typ, what)
		checkGoType(t, s.Items2020, gt.Elem(), what+"[]")
	case gt.Kind() == reflect.Struct:
		require.Equal(t, []string{"object"}, typ, what)
		fields := map[string]reflect.StructField{}
		var required []string
		for i := range gt.NumField() {
			f := gt.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			fields[name] = f
			if o := strings.Split(opts, ","); !slices.Contains(o, "omitempty") && !slices.Contains(o, "omitzero") {
				required = append(required, name)
			}
		}
		require.ElementsMatch(t, slices.Collect(maps.Keys(fields)), slices.Collect(maps.Keys(s.Properties)), "%s: schema properties vs JSON fields", what)
		require.ElementsMatch(t, required, s.Required, "%s: schema required vs fields without omitempty", what)
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			checkGoType(t, s.Properties[name], fields[name].Type, what+"."+fields[name].Name)
		}
	default:
		t.Fatalf("%s: no rule for Go type %s", what, gt)
	}
}
