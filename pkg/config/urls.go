package config

import (
	"net/url"
	"strings"
)

// SplitURLs splits a broker.url setting into its URLs: one URL, or several
// separated by commas (the nodes of a RabbitMQ cluster), spaces around each
// trimmed. A comma inside a URL (in a password, say) is written %2C.
func SplitURLs(raw string) []string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// RedactURL is raw with its password replaced by "xxxxx", for logs and
// errors; a URL that does not parse has everything between its scheme and
// its last '@' replaced.
func RedactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if at := strings.LastIndex(raw, "@"); at >= 0 {
		if scheme, _, ok := strings.Cut(raw, "://"); ok {
			return scheme + "://xxxxx" + raw[at:]
		}
		return "xxxxx" + raw[at:]
	}
	return raw
}
