package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Reconnect pacing: the first dial after a connection is lost goes at once
// (to the next node of the list), then each failed dial waits twice as long
// as the one before, up to reconnectMax.
const (
	reconnectFirst = 250 * time.Millisecond
	reconnectMax   = 5 * time.Second
	// dialTimeout bounds one TCP connect and AMQP handshake, so that a
	// node that does not answer (rather than refusing) does not hold up
	// the next one for amqp091's default 30s.
	dialTimeout = 10 * time.Second
	// heartbeat is amqp091's default, written down: a node that vanishes
	// without closing its sockets is noticed within about two of these.
	heartbeat = 10 * time.Second
)

// amqpConn is a reconnecting AMQP connection to one node of a list of
// RabbitMQ URLs (the nodes of a cluster, or one URL). It dials the list
// round-robin, starting at a random position so that processes spread over
// the nodes: when the connection is lost, or a dial fails, the next URL is
// dialed. Publishers and subscribers open their channels on Connection()
// and, when a channel fails, wait for Connected() and open it again.
//
// It replaces watermill-amqp v2.1.3's ConnectionWrapper, which dials one
// URL and swaps its connected channel without a lock while readers use it.
type amqpConn struct {
	urls   []string
	name   string // connection_name, shown by RabbitMQ (rabbitmqctl list_connections name)
	logger *slog.Logger

	mu        sync.Mutex
	conn      *amqp.Connection
	url       int           // index in urls of the URL conn was dialed with
	next      int           // index in urls of the next URL to dial
	connected chan struct{} // closed while conn is open; replaced when it is lost
	closed    bool

	closing chan struct{}
	done    chan struct{} // closed when the reconnect loop has ended
}

// newAMQPConn dials the URLs in turn, starting at urls[start], and returns
// once one of them answers; it fails only when every URL failed, with each
// URL's error (passwords redacted).
func newAMQPConn(urls []string, start int, name string, logger *slog.Logger) (*amqpConn, error) {
	if len(urls) == 0 {
		return nil, errors.New("amqp driver needs a broker URL")
	}
	c := &amqpConn{
		urls: urls, name: name, logger: logger,
		next:      start % len(urls),
		connected: make(chan struct{}),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	var errs []error
	for range urls {
		err := c.dial()
		if err == nil {
			go c.keep()
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("connecting to RabbitMQ: %w", errors.Join(errs...))
}

// dial dials the next URL of the list and, on success, makes it the
// connection; either way the one after is next.
func (c *amqpConn) dial() error {
	c.mu.Lock()
	i := c.next
	c.next = (c.next + 1) % len(c.urls)
	c.mu.Unlock()
	conn, err := amqp.DialConfig(c.urls[i], amqp.Config{
		Heartbeat:  heartbeat,
		Locale:     "en_US",
		Dial:       amqp.DefaultDial(dialTimeout),
		Properties: amqp.Table{"connection_name": c.name},
	})
	if err != nil {
		return fmt.Errorf("%s: %w", redactURL(c.urls[i]), err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		_ = conn.Close()
		return errors.New("connection closed")
	}
	c.conn, c.url = conn, i
	close(c.connected)
	return nil
}

// keep waits for the connection to be lost and dials the list again until
// a URL answers or Close.
func (c *amqpConn) keep() {
	defer close(c.done)
	for {
		c.mu.Lock()
		conn, url := c.conn, c.url
		c.mu.Unlock()
		lost := conn.NotifyClose(make(chan *amqp.Error, 1))
		select {
		case <-c.closing:
			return
		case err := <-lost:
			c.mu.Lock()
			c.connected = make(chan struct{})
			c.mu.Unlock()
			c.logger.Warn("lost the RabbitMQ connection, connecting to the next URL", "connection", c.name,
				"url", redactURL(c.urls[url]), "error", fmt.Sprint(err))
		}
		wait := time.Duration(0)
		for attempt := 1; ; attempt++ {
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-c.closing:
					t.Stop()
					return
				case <-t.C:
				}
			}
			err := c.dial()
			if err == nil {
				c.mu.Lock()
				now := c.urls[c.url]
				c.mu.Unlock()
				c.logger.Info("reconnected to RabbitMQ", "connection", c.name, "url", redactURL(now), "attempts", attempt)
				break
			}
			select {
			case <-c.closing:
				return
			default:
			}
			c.logger.Warn("cannot connect to RabbitMQ, trying the next URL", "connection", c.name, "error", err.Error())
			wait = min(max(wait*2, reconnectFirst), reconnectMax)
		}
	}
}

// Connection is the current connection: open while IsConnected, possibly
// closed (a channel opened on it then fails) between a loss and the next
// successful dial.
func (c *amqpConn) Connection() *amqp.Connection {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn
}

// Connected is closed while a connection is open; a reader that found the
// connection lost waits on it for the next one.
func (c *amqpConn) Connected() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.connected
}

// IsConnected reports whether a connection is open.
func (c *amqpConn) IsConnected() bool {
	select {
	case <-c.Connected():
		return true
	default:
		return false
	}
}

// URL is the URL of the current (or last) connection, password redacted.
func (c *amqpConn) URL() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return redactURL(c.urls[c.url])
}

// Close stops reconnecting and closes the connection.
func (c *amqpConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closing)
	conn := c.conn
	c.mu.Unlock()
	<-c.done
	if conn != nil && !conn.IsClosed() {
		return conn.Close()
	}
	return nil
}

// splitURLs splits Config.AMQPURL into its URLs, separated by commas, as
// config.SplitURLs does (the packages do not import each other).
func splitURLs(raw string) []string {
	parts := strings.Split(raw, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return parts
}

// redactURL is raw with its password replaced by "xxxxx", for logs and
// errors, as config.RedactURL does.
func redactURL(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		return u.Redacted()
	}
	if at := strings.LastIndex(raw, "@"); at >= 0 {
		scheme, _, ok := strings.Cut(raw, "://")
		if ok {
			return scheme + "://xxxxx" + raw[at:]
		}
		return "xxxxx" + raw[at:]
	}
	return raw
}
