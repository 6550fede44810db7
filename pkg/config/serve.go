package config

import "errors"

// CheckServe reports what makes c unfit for `tasklane serve`, beyond
// [Config.Validate]: no functions (nothing would ever run) is always an
// error; no tenants (the API would take requests without a key) is an error
// unless allowNoAuth (the --insecure-no-auth flag). The errors are
// [*Error]s naming c's file. `config validate` reports no tenants as a
// warning only: an open API is legal, for development.
func (c *Config) CheckServe(allowNoAuth bool) error {
	var errs []error
	if len(c.Functions) == 0 {
		errs = append(errs, &Error{File: c.File, Field: "functions",
			Msg: "no functions configured: serve would run nothing (add a function, e.g. endpoint: \"builtin:echo\"; see examples/tasklane.yaml)"})
	}
	if len(c.Tenants) == 0 && !allowNoAuth {
		errs = append(errs, &Error{File: c.File, Field: "tenants",
			Msg: NoTenantsWarning + "; add tenants with api_keys, or pass --insecure-no-auth to serve without authentication (development only)"})
	}
	return errors.Join(errs...)
}

// NoTenantsWarning says what a config without tenants means.
const NoTenantsWarning = "no tenants configured: the API accepts requests without a key, as tenant \"default\""

// IsSet reports whether path (a field path such as "server.addr") was
// written in the file c was read from. A Config built in Go has nothing set.
func (c *Config) IsSet(path string) bool {
	_, ok := c.pos[path]
	return ok
}
