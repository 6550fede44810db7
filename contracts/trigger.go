package contracts

import "time"

// TriggerView is one trigger in the answer of GET /v1/triggers: its config
// and its state as Redis holds it, so any gateway answers for triggers that
// other processes run.
type TriggerView struct {
	// Name, Kind and Tenant are from the config. Kind is "cron", "http" or
	// "objectstore".
	Name   string `json:"name"`
	Kind   string `json:"kind"`
	Tenant string `json:"tenant"`
	// Schedule and Timezone (cron), Path (hooks: /hooks/<path>), Mode and
	// Bucket (object store) describe what fires it.
	Schedule string `json:"schedule,omitempty"`
	Timezone string `json:"timezone,omitempty"`
	Path     string `json:"path,omitempty"`
	Mode     string `json:"mode,omitempty"`
	Bucket   string `json:"bucket,omitempty"`
	// EventType is the type of the events it emits (object store: their
	// prefix).
	EventType string `json:"event_type"`
	// State is running, standby or failing while a process ran it recently
	// (its heartbeat is fresh), stopped otherwise.
	State string `json:"state"`
	// Owner is the process that last ran it; Heartbeat when.
	Owner     string    `json:"owner,omitempty"`
	Heartbeat time.Time `json:"heartbeat,omitzero"`
	// LastFire and LastEventID: the last submission.
	LastFire    time.Time `json:"last_fire,omitzero"`
	LastEventID string    `json:"last_event_id,omitempty"`
	// NextFire is the next scheduled fire (cron) or poll (object store),
	// while the trigger runs.
	NextFire time.Time `json:"next_fire,omitzero"`
	// Fires counts the events submitted, by every process.
	Fires int64 `json:"fires"`
	// LastError and LastErrorAt: the last failure, cleared by a success.
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
}

// TriggerList is the body of a 200 answer to GET /v1/triggers: the
// caller's tenant's triggers.
type TriggerList struct {
	// Triggers lists the tenant's triggers in config order; empty when it
	// has none.
	Triggers []TriggerView `json:"triggers"`
}
