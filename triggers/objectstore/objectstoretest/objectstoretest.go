// Package objectstoretest runs an in-process S3-protocol server
// (github.com/johannesboyne/gofakes3 over memory) for tests of the
// object-store trigger, and writes to it through minio-go, the client the
// trigger itself uses.
package objectstoretest

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Credentials the server accepts (gofakes3 checks none, but minio-go signs
// every request with them).
const (
	AccessKey = "tasklane-test"
	SecretKey = "tasklane-test-secret"
	Region    = "us-east-1"
)

// Server is a running fake S3 server.
type Server struct {
	// URL is the endpoint, http://127.0.0.1:<port>.
	URL string
	// Client is a minio-go client of the server.
	Client *minio.Client

	srv *httptest.Server
}

// NewServer starts an empty server, closed when the test ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	faker := gofakes3.New(s3mem.New(), gofakes3.WithLogger(gofakes3.DiscardLog()))
	srv := httptest.NewServer(faker.Server())
	t.Cleanup(srv.Close)
	client, err := minio.New(srv.Listener.Addr().String(), &minio.Options{
		Creds:  credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Region: Region,
		// One attempt: the server is in the process, and a test that
		// closes it wants the failure now, not after minio-go's ten
		// backed-off retries (seconds).
		MaxRetries: 1,
	})
	if err != nil {
		t.Fatalf("making the S3 client: %v", err)
	}
	return &Server{URL: srv.URL, Client: client, srv: srv}
}

// Close stops the server (later requests fail to connect).
func (s *Server) Close() { s.srv.Close() }

// MakeBucket creates bucket.
func (s *Server) MakeBucket(t testing.TB, bucket string) {
	t.Helper()
	if err := s.Client.MakeBucket(ctx(t), bucket, minio.MakeBucketOptions{Region: Region}); err != nil {
		t.Fatalf("making bucket %s: %v", bucket, err)
	}
}

// Put writes body to bucket/key and returns what the store says of it.
func (s *Server) Put(t testing.TB, bucket, key, body string) minio.UploadInfo {
	t.Helper()
	info, err := s.Client.PutObject(ctx(t), bucket, key, bytes.NewReader([]byte(body)), int64(len(body)), minio.PutObjectOptions{ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatalf("putting %s/%s: %v", bucket, key, err)
	}
	return info
}

// Stat returns what the store says of bucket/key.
func (s *Server) Stat(t testing.TB, bucket, key string) minio.ObjectInfo {
	t.Helper()
	info, err := s.Client.StatObject(ctx(t), bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("stating %s/%s: %v", bucket, key, err)
	}
	return info
}

// Delete removes bucket/key.
func (s *Server) Delete(t testing.TB, bucket, key string) {
	t.Helper()
	if err := s.Client.RemoveObject(ctx(t), bucket, key, minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("deleting %s/%s: %v", bucket, key, err)
	}
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}
