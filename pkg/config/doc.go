// Package config loads, defaults and validates the tasklane configuration
// file (README.md, "Configuration").
//
// # Loading
//
// [Load] reads a YAML file and hands it to [Parse], which decodes it strictly,
// applies defaults ([Config.WithDefaults]) and validates the result
// ([Config.Validate]). An empty document is a valid configuration: every field
// takes its default. A [Config] built in Go code (the dev-mode default, tests)
// is checked with [Config.Validate] directly, usually after WithDefaults.
//
// # Errors
//
// Every problem is reported, not only the first: the returned error is an
// [errors.Join] of [*Error] values, sorted by position. Each one names the
// file, line, column and field path, for example:
//
//	tasklane.yaml:7:5: functions[0].endpiont: unknown key (did you mean "endpoint"?)
//	tasklane.yaml:12:14: functions[1].timeout: invalid duration "30 seconds" (use e.g. 30s, 5m, 1h)
//
// Strict decoding walks the YAML node tree against the yaml tags of the Go
// types, so unknown keys, duplicate keys and values of the wrong type are
// reported with their full path. The positions seen while decoding are kept
// with the Config, so Validate can attach them to semantic problems (duplicate
// names, out-of-range values, missing required fields). A Config built in Go
// has no positions and its errors carry only the field path.
//
// Validate also checks the sections against each other: a trigger must emit
// event types a function takes (for its tenant), a subscription filter must
// name configured functions and tenants. What depends on the binary or the
// environment is checked on request, in the same form:
// [Config.CheckGoEndpoints] (go: endpoints against the registered handlers)
// and [Config.CheckTriggerEnv]. [Config.Warnings] reports risky but legal
// settings (no tenants, no admin keys, open webhooks, 0.0.0.0 as a
// destination); they do not stop Tasklane.
//
// API keys and URL credentials are never echoed in error messages.
//
// # Environment
//
// Libraries do not read the environment: [Config.ApplyEnv] applies the
// TASKLANE_ADDR, TASKLANE_AMQP_URL, TASKLANE_REDIS_URL,
// TASKLANE_REDIS_CLUSTER and TASKLANE_LEDGER_PARTITIONS overrides when the
// caller (the tasklane binary) asks for it.
package config
