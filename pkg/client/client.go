// Package client is a Go client for Tasklane's HTTP API: submit
// CloudEvents (binary, structured or batch mode; priority, delay, TTL and
// batch as extension attributes), read, list and cancel tasks (by id or by
// selector), pause and resume them, follow a task or its log until it
// ends (Follow, Watch, FollowLog), inspect, redrive and purge the
// dead-letter queue (in bounded steps with DLQFilter.Limit), wait for the
// jobs large bulk calls run as (Job, Wait), list the tenant's triggers and
// functions, and the admin routing API.
//
// The answers are the types of package contracts, whose JSON Schemas
// (contracts/schema/) document every field. A non-2xx answer is returned as
// an *Error with the status code and the server's message.
//
//	c, err := client.New("http://127.0.0.1:8080", client.Options{APIKey: os.Getenv("TASKLANE_KEY")})
//	...
//	sr, err := c.Submit(ctx, client.Event{ID: "order-1", Source: "/shop", Type: "com.example.order", Data: []byte(`{}`)})
//	...
//	task, err := c.GetTask(ctx, sr.Tasks[0].ID)
//
// `tasklane submit`, `tasks`, `dlq`, `routing` and `triggers` are built on
// this package.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tasklane/tasklane/contracts"
)

// Defaults.
const (
	// ServerDefault is the address `tasklane dev` listens on.
	ServerDefault = "http://127.0.0.1:8080"
	// TimeoutDefault bounds one request, answer included, when Options has
	// no HTTPClient.
	TimeoutDefault = 30 * time.Second
	// MaxResponseBytesDefault bounds the body of an answer: a page of the
	// largest task list (500 tasks) with results of 64 KiB each fits.
	MaxResponseBytesDefault = 64 << 20
	// maxErrorMessage bounds the part of a non-JSON error answer kept in
	// an Error's message.
	maxErrorMessage = 1 << 10
)

// Options configure a Client. The zero value is a client without an API
// key (a server without tenants, as `tasklane dev`).
type Options struct {
	// APIKey is sent as `Authorization: Bearer <key>`: a tenant's key for
	// the task, DLQ and trigger calls, an admin key (server.admin_keys)
	// for the routing calls. Empty sends none.
	APIKey string
	// HTTPClient sends the requests. Default: a client with
	// TimeoutDefault.
	HTTPClient *http.Client
	// MaxResponseBytes bounds the body of an answer; a larger one is an
	// error. Default MaxResponseBytesDefault.
	MaxResponseBytes int64
}

// Client calls one Tasklane server. It is safe for concurrent use.
type Client struct {
	server   string
	key      string
	http     *http.Client
	maxBytes int64
}

// New returns a client of the server at server, an http:// or https://
// URL such as ServerDefault.
func New(server string, opts Options) (*Client, error) {
	u, err := url.Parse(server)
	if err != nil {
		// Not the URL itself: it may hold a password.
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err
		}
		return nil, fmt.Errorf("server URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http://host[:port] or https://host[:port]", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("server URL %q: want no query, fragment or user info", u.Redacted())
	}
	c := &Client{server: strings.TrimSuffix(u.String(), "/"), key: opts.APIKey, http: opts.HTTPClient, maxBytes: opts.MaxResponseBytes}
	if c.http == nil {
		c.http = &http.Client{Timeout: TimeoutDefault}
	}
	if c.maxBytes <= 0 {
		c.maxBytes = MaxResponseBytesDefault
	}
	return c, nil
}

// Server is the server URL the client calls, without a trailing slash.
func (c *Client) Server() string { return c.server }

// Error is an answer whose status is not 2xx.
type Error struct {
	// StatusCode is the answer's HTTP status.
	StatusCode int
	// Message is the server's error (contracts.ErrorResponse), or the
	// start of the body when the answer was not one.
	Message string
	// RetryAfter is the answer's Retry-After header (429, 503), if any.
	RetryAfter string
	// Response is the decoded error answer, when it was one: on a 429 of
	// backpressure it names the tenant, backlog, limit and reason.
	Response contracts.ErrorResponse
}

func (e *Error) Error() string {
	return fmt.Sprintf("server answered %d: %s", e.StatusCode, e.Message)
}

// StatusCode returns the status of err's *Error answer, or 0 when err is
// not an answer (a connection error, a timeout).
func StatusCode(err error) int {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.StatusCode
	}
	return 0
}

// Event is a CloudEvent to submit in binary mode (specversion 1.0).
type Event struct {
	// ID, Source and Type are the required attributes. The server
	// deduplicates on (tenant, source, id): submit again with the same id
	// after an error whose outcome is unknown.
	ID     string
	Source string
	Type   string
	// Subject is the optional subject attribute.
	Subject string
	// DataContentType is the media type of Data (the Content-Type header),
	// e.g. application/json. Empty sends none.
	DataContentType string
	// Data is the event's data, sent as the body.
	Data []byte
	// Extensions are further attributes, sent as ce-<name> headers: the
	// ones Tasklane reads are contracts.ExtPriority, ExtDelay,
	// ExtDeliverAt, ExtTTL, ExtExpiresAt, ExtTraceParent, ExtTraceState.
	Extensions map[string]string
}

// Submit submits ev (POST /v1/events). The answer lists one task per
// function subscribed to ev's type; a duplicate event names the tasks made
// the first time.
func (c *Client) Submit(ctx context.Context, ev Event) (*contracts.SubmitResponse, error) {
	var missing []string
	for _, a := range []struct{ name, v string }{{"id", ev.ID}, {"source", ev.Source}, {"type", ev.Type}} {
		if a.v == "" {
			missing = append(missing, a.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("event: %s required", strings.Join(missing, ", "))
	}
	h := http.Header{}
	h.Set("Ce-Specversion", "1.0")
	h.Set("Ce-Id", ev.ID)
	h.Set("Ce-Source", ev.Source)
	h.Set("Ce-Type", ev.Type)
	if ev.Subject != "" {
		h.Set("Ce-Subject", ev.Subject)
	}
	if ev.DataContentType != "" {
		h.Set("Content-Type", ev.DataContentType)
	}
	for k, v := range ev.Extensions {
		h.Set("Ce-"+k, v)
	}
	return do[contracts.SubmitResponse](ctx, c, http.MethodPost, "/v1/events", nil, h, ev.Data)
}

// Page selects one page of a listing.
type Page struct {
	// Limit is the page size (1 to 500); 0 takes the server's default.
	Limit int
	// Cursor continues a listing: the NextCursor of the page before.
	Cursor string
}

func (p Page) query(q url.Values) {
	if p.Limit > 0 {
		q.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.Cursor != "" {
		q.Set("cursor", p.Cursor)
	}
}

// TaskFilter selects tasks to list. Empty fields match all.
type TaskFilter struct {
	// State keeps tasks in this state.
	State contracts.State
	// Function keeps tasks of this function.
	Function string
	// EventID keeps the tasks made from events with this id (any source
	// unless Source is set too): how a CloudEvents SDK user, who knows only
	// the event id, finds its tasks. The server remembers event ids for its
	// dedup window.
	EventID string
	// Source, with EventID, keeps the tasks of exactly that event (its
	// dedup identity); the answer is then one page.
	Source string
	// Batch keeps the tasks whose event had this batch extension attribute.
	Batch string
}

// GetTask returns the task id (GET /v1/tasks/{id}).
func (c *Client) GetTask(ctx context.Context, id string) (*contracts.Task, error) {
	return do[contracts.Task](ctx, c, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), nil, nil, nil)
}

// ListTasks returns one page of the tenant's tasks matching f, newest
// first (GET /v1/tasks).
func (c *Client) ListTasks(ctx context.Context, f TaskFilter, p Page) (*contracts.TaskList, error) {
	q := url.Values{}
	if f.State != "" {
		q.Set("state", string(f.State))
	}
	if f.Function != "" {
		q.Set("function", f.Function)
	}
	if f.EventID != "" {
		q.Set("event_id", f.EventID)
	}
	if f.Source != "" {
		q.Set("source", f.Source)
	}
	if f.Batch != "" {
		q.Set("batch", f.Batch)
	}
	p.query(q)
	return do[contracts.TaskList](ctx, c, http.MethodGet, "/v1/tasks", q, nil, nil)
}

// CancelTask cancels a task that has not ended (a running attempt is
// aborted) and returns its record (DELETE /v1/tasks/{id}); an ended task
// is a 409 *Error.
func (c *Client) CancelTask(ctx context.Context, id string) (*contracts.Task, error) {
	return do[contracts.Task](ctx, c, http.MethodDelete, "/v1/tasks/"+url.PathEscape(id), nil, nil, nil)
}

// TaskLog returns the task's log, entries in time order
// (GET /v1/tasks/{id}/logs).
func (c *Client) TaskLog(ctx context.Context, id string) (*contracts.TaskLog, error) {
	return c.TaskLogAfter(ctx, id, 0)
}

// TaskLogAfter returns the entries of the task's log whose seq is above
// after, in time order, and the log's LastSeq: pass it as the next after
// to get only the entries appended since, none twice and none missed
// (GET /v1/tasks/{id}/logs?after=<seq>). After 0 is the whole log.
func (c *Client) TaskLogAfter(ctx context.Context, id string, after int64) (*contracts.TaskLog, error) {
	var q url.Values
	if after > 0 {
		q = url.Values{"after": {strconv.FormatInt(after, 10)}}
	}
	return do[contracts.TaskLog](ctx, c, http.MethodGet, "/v1/tasks/"+url.PathEscape(id)+"/logs", q, nil, nil)
}

// WriteTaskLog appends lines to a task's log with the task token its
// function got with the attempt (header Tasklane-Task-Token), not the
// client's API key (POST /v1/tasks/{id}/logs).
func (c *Client) WriteTaskLog(ctx context.Context, id, token string, lines []string) error {
	body, err := json.Marshal(contracts.LogLines{Lines: lines})
	if err != nil {
		return err
	}
	h := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	return c.call(ctx, http.MethodPost, "/v1/tasks/"+url.PathEscape(id)+"/logs", nil, h, body, nil)
}

// ListDLQ returns one page of the dead-lettered tasks matching f, newest
// first (GET /v1/dlq); f.DryRun is ignored.
func (c *Client) ListDLQ(ctx context.Context, f contracts.DLQFilter, p Page) (*contracts.TaskList, error) {
	q := url.Values{}
	if f.Function != "" {
		q.Set("function", f.Function)
	}
	if f.Reason != "" {
		q.Set("reason", string(f.Reason))
	}
	if f.Since != nil {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	if f.Until != nil {
		q.Set("until", f.Until.Format(time.RFC3339Nano))
	}
	p.query(q)
	return do[contracts.TaskList](ctx, c, http.MethodGet, "/v1/dlq", q, nil, nil)
}

// GetDLQ returns the dead-lettered task id (GET /v1/dlq/{id}); a task
// that is not dead is a 404 *Error.
func (c *Client) GetDLQ(ctx context.Context, id string) (*contracts.Task, error) {
	return do[contracts.Task](ctx, c, http.MethodGet, "/v1/dlq/"+url.PathEscape(id), nil, nil, nil)
}

// RedriveDLQ puts the dead task id back to work with a fresh attempt
// budget and returns its record (POST /v1/dlq/{id}/redrive).
func (c *Client) RedriveDLQ(ctx context.Context, id string) (*contracts.Task, error) {
	return do[contracts.Task](ctx, c, http.MethodPost, "/v1/dlq/"+url.PathEscape(id)+"/redrive", nil, nil, nil)
}

// PurgeDLQ deletes the dead task id for good (DELETE /v1/dlq/{id}).
func (c *Client) PurgeDLQ(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/v1/dlq/"+url.PathEscape(id), nil, nil, nil, nil)
}

// RedriveDLQMatching redrives every dead task matching f, or with
// f.DryRun only counts them (POST /v1/dlq/redrive). With f.Limit it is one
// step of at most that many matches: continue with f.Cursor set to the
// answer's NextCursor until it is empty. A selection larger than the
// server handles in a request runs as a job: the call waits for it (see
// Wait) and answers its totals.
func (c *Client) RedriveDLQMatching(ctx context.Context, f contracts.DLQFilter, opts ...WaitOption) (*contracts.DLQResult, error) {
	return c.dlqBulk(ctx, "/v1/dlq/redrive", f, opts)
}

// PurgeDLQMatching purges every dead task matching f, or with f.DryRun
// only counts them (POST /v1/dlq/purge); f.Limit and f.Cursor step it,
// and a job is waited for, as RedriveDLQMatching's.
func (c *Client) PurgeDLQMatching(ctx context.Context, f contracts.DLQFilter, opts ...WaitOption) (*contracts.DLQResult, error) {
	return c.dlqBulk(ctx, "/v1/dlq/purge", f, opts)
}

func (c *Client) dlqBulk(ctx context.Context, path string, f contracts.DLQFilter, opts []WaitOption) (*contracts.DLQResult, error) {
	return bulk(ctx, c, path, f, opts, func(j *contracts.Job) *contracts.DLQResult {
		return &contracts.DLQResult{Matched: j.Matched, Done: j.Done, NextCursor: j.NextCursor}
	})
}

// Pause pauses the tenant's tasks that sel matches, waiting now or
// submitted later, until Resume (POST /v1/pauses).
func (c *Client) Pause(ctx context.Context, sel contracts.Selector) (*contracts.Pause, error) {
	body, err := json.Marshal(sel)
	if err != nil {
		return nil, err
	}
	return do[contracts.Pause](ctx, c, http.MethodPost, "/v1/pauses", nil, jsonHeader(), body)
}

// Pauses lists the tenant's pauses (GET /v1/pauses).
func (c *Client) Pauses(ctx context.Context) (*contracts.PauseList, error) {
	return do[contracts.PauseList](ctx, c, http.MethodGet, "/v1/pauses", nil, nil, nil)
}

// Resume ends the pause id and answers how many tasks it released
// (DELETE /v1/pauses/{id}).
func (c *Client) Resume(ctx context.Context, id string) (*contracts.ResumeResponse, error) {
	return do[contracts.ResumeResponse](ctx, c, http.MethodDelete, "/v1/pauses/"+url.PathEscape(id), nil, nil, nil)
}

// CancelMatching cancels the tenant's tasks that r's selector matches
// (waiting, paused and running), or with r.DryRun only counts them; with
// r.Limit one step of the selection, continued with r.Cursor set to the
// answer's NextCursor (POST /v1/tasks/cancel).
//
// A selection larger than the server handles in a request runs as a job:
// the call waits for it (see Wait) and answers its totals.
func (c *Client) CancelMatching(ctx context.Context, r contracts.CancelRequest, opts ...WaitOption) (*contracts.CancelResponse, error) {
	return bulk(ctx, c, "/v1/tasks/cancel", r, opts, func(j *contracts.Job) *contracts.CancelResponse {
		return &contracts.CancelResponse{Matched: j.Matched, Cancelled: j.Done, NextCursor: j.NextCursor}
	})
}

// Triggers lists the tenant's triggers with their state (GET
// /v1/triggers).
func (c *Client) Triggers(ctx context.Context) (*contracts.TriggerList, error) {
	return do[contracts.TriggerList](ctx, c, http.MethodGet, "/v1/triggers", nil, nil, nil)
}

// Routing returns the routing table: lanes with backlog and consumers,
// tenants' placement, recent changes (GET /v1/admin/routing; an admin
// key).
func (c *Client) Routing(ctx context.Context) (*contracts.RoutingView, error) {
	return do[contracts.RoutingView](ctx, c, http.MethodGet, "/v1/admin/routing", nil, nil, nil)
}

// Functions returns every configured function's flow control: its limit,
// running attempts, waiting tasks and throttled answers in the last minute
// (GET /v1/admin/functions; an admin key).
func (c *Client) Functions(ctx context.Context) (*contracts.FunctionsView, error) {
	return do[contracts.FunctionsView](ctx, c, http.MethodGet, "/v1/admin/functions", nil, nil, nil)
}

// TenantFunctions returns the functions the client's tenant's events
// reach: each function's limit, the tenant's running attempts and waiting
// tasks of it, and the tenant's quota and its use (GET /v1/functions; a
// tenant's key). It holds no other tenant's numbers.
func (c *Client) TenantFunctions(ctx context.Context) (*contracts.TenantFunctionsView, error) {
	return do[contracts.TenantFunctionsView](ctx, c, http.MethodGet, "/v1/functions", nil, nil, nil)
}

// PinTenant pins tenant to a dedicated lane (dedicated) or to its shared
// shard, and returns the routing change (POST /v1/admin/routing/pin; an
// admin key).
func (c *Client) PinTenant(ctx context.Context, tenant string, dedicated bool) (*contracts.RoutingChange, error) {
	body, err := json.Marshal(contracts.PinRequest{Tenant: tenant, Dedicated: dedicated})
	if err != nil {
		return nil, err
	}
	return do[contracts.RoutingChange](ctx, c, http.MethodPost, "/v1/admin/routing/pin", nil, jsonHeader(), body)
}

func jsonHeader() http.Header { return http.Header{"Content-Type": {"application/json"}} }

// do calls c and returns the answer decoded as a T.
func do[T any](ctx context.Context, c *Client, method, path string, q url.Values, header http.Header, body []byte) (*T, error) {
	var out T
	if err := c.call(ctx, method, path, q, header, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// call sends one request and decodes a 2xx answer's JSON body into out
// (when not nil); any other answer is an *Error.
func (c *Client) call(ctx context.Context, method, path string, q url.Values, header http.Header, body []byte, out any) error {
	status, b, err := c.send(ctx, method, path, q, header, body)
	if err != nil {
		return err
	}
	if out == nil || status == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: answer %d is not the JSON expected: %w", method, path, status, err)
	}
	return nil
}

// send sends one request and returns a 2xx answer's status and body; any
// other answer is an *Error.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, header http.Header, body []byte) (int, []byte, error) {
	u := c.server + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if c.key != "" && req.Header.Get("Authorization") == "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if int64(len(b)) > c.maxBytes {
		return 0, nil, fmt.Errorf("%s %s: answer larger than %d bytes (Options.MaxResponseBytes)", method, path, c.maxBytes)
	}
	if resp.StatusCode/100 != 2 {
		return 0, nil, answerError(resp, b)
	}
	return resp.StatusCode, b, nil
}

func answerError(resp *http.Response, body []byte) *Error {
	e := &Error{StatusCode: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After")}
	var er contracts.ErrorResponse
	if json.Unmarshal(body, &er) == nil && er.Error != "" {
		e.Message, e.Response = er.Error, er
		return e
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}
