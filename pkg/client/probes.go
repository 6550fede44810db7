package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// Ready asks the server whether it is ready (GET /readyz, no key needed).
// It returns the server's checks (name to "ok" or the reason) and nil when
// the answer is 200; an *Error whose message names each check that is not
// ok otherwise.
func (c *Client) Ready(ctx context.Context) (map[string]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+"/readyz", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET /readyz: reading the answer: %w", err)
	}
	var checks map[string]string
	if json.Unmarshal(b, &checks) != nil {
		checks = nil
	}
	if resp.StatusCode == http.StatusOK {
		return checks, nil
	}
	if len(checks) == 0 {
		return nil, answerError(resp, b)
	}
	var failing []string
	for _, k := range slices.Sorted(maps.Keys(checks)) {
		if checks[k] != "ok" {
			failing = append(failing, k+": "+checks[k])
		}
	}
	return checks, &Error{StatusCode: resp.StatusCode, Message: "not ready: " + strings.Join(failing, "; "), RetryAfter: resp.Header.Get("Retry-After")}
}
