// Package triggers turns the outside world into CloudEvents: schedules
// (package triggers/cron), webhook requests (triggers/webhook) and
// object-store changes (triggers/objectstore). Every trigger submits what it
// makes through a [Submitter] — in Tasklane the in-process ingest path — so
// triggered events get the same validation, dedup, limits and routing as
// events POSTed to /v1/events.
//
// # Lifecycle
//
// A [Trigger] is built by its package's New from a Go config struct (the
// services layer maps the YAML config and reads secrets from the
// environment), started once with Start and stopped once with Stop. Stop
// waits for a submission in flight to finish, so swapping triggers on a
// config reload drops no work. Triggers that take requests ([Hook]) are also
// http.Handlers, mounted by the services layer at /hooks/<path>.
//
// # Running on several replicas
//
// Cron schedules and object-store polls must be evaluated by one replica at
// a time: a [Lock] (Redis SET NX PX with a fencing token, renewed while
// held) elects it, and the trigger's cursor or checkpoint is written only
// while the token still holds the lock. Event ids are deterministic (a cron
// fire's id is "<trigger>/<scheduled time>", an object's id derives from its
// key, ETag and modification time), so a fire submitted twice — by a
// replica that lost the lock mid-flight, or after a crash between submit and
// checkpoint — is deduplicated by the ingest path rather than run twice.
//
// # State
//
// A [Store] keeps what `GET /v1/triggers` shows in Redis, so any gateway
// can list the state of triggers run by other processes: the holder or
// server, its heartbeat, the last and next fire, the number of events
// submitted and the last error. Keys are
// "<ledger key_prefix>:trigger:{<name>}:<part>"; the hash tag keeps one
// trigger's keys in one Redis Cluster slot.
package triggers
