// Command thumbnail is the example function of the image upload ->
// thumbnail demo (examples/triggers.yaml): an HTTP function that Tasklane
// calls with the com.example.image.created events of an object-store
// trigger. It reads the image the event's dataref points at
// (s3://<bucket>/<key>), scales it down to fit Size x Size, and writes a
// PNG to thumbnails/<key>.png in the same bucket.
//
//	THUMBNAIL_S3_ENDPOINT=http://127.0.0.1:9090 \
//	AWS_ACCESS_KEY_ID=minioadmin AWS_SECRET_ACCESS_KEY=minioadmin \
//	go run ./examples/thumbnail          # listens on :9000, POST /thumbnail
//
// Its answers follow Tasklane's classification: 200 with the thumbnail's
// dataref; 400 (not retried, dead-lettered) for an event that is not an
// image of the bucket; 503 (retried) when the store does not answer.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // decoders the function accepts
	_ "image/jpeg"
	"image/png"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/tasklane/tasklane/triggers/objectstore"
)

// Defaults.
const (
	// SizeDefault is the largest side of a thumbnail, in pixels.
	SizeDefault = 128
	// PrefixDefault is where thumbnails are written: <prefix><key>.png.
	PrefixDefault = "thumbnails/"
	// MaxImageBytes bounds the image read.
	MaxImageBytes = 32 << 20
)

func main() {
	addr := flag.String("addr", envOr("THUMBNAIL_ADDR", ":9000"), "listen address (env THUMBNAIL_ADDR)")
	endpoint := flag.String("s3-endpoint", envOr("THUMBNAIL_S3_ENDPOINT", "http://127.0.0.1:9090"), "S3 endpoint (env THUMBNAIL_S3_ENDPOINT)")
	region := flag.String("s3-region", envOr("THUMBNAIL_S3_REGION", "us-east-1"), "S3 region (env THUMBNAIL_S3_REGION)")
	flag.Parse()
	client, err := NewS3Client(*endpoint, *region, os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "thumbnail:", err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /thumbnail", &Handler{S3: client, Logger: slog.Default()})
	slog.Info("thumbnail function listening", "addr", *addr, "s3", *endpoint)
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "thumbnail:", err)
		os.Exit(1)
	}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// NewS3Client returns a minio-go client of endpoint (http(s)://host[:port]).
func NewS3Client(endpoint, region, accessKey, secretKey string) (*minio.Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("S3 endpoint %q: want http(s)://host[:port]", endpoint)
	}
	return minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(accessKey, secretKey, ""),
		Secure: u.Scheme == "https",
		Region: region,
	})
}

// Handler makes the thumbnail of the image an event refers to.
type Handler struct {
	// S3 reads images and writes thumbnails. Required.
	S3 *minio.Client
	// Size is the largest side of a thumbnail. Default SizeDefault.
	Size int
	// Prefix is where thumbnails go. Default PrefixDefault.
	Prefix string
	// Logger receives a line per thumbnail. Default slog.Default().
	Logger *slog.Logger
}

// Result is the function's answer, the task's result.
type Result struct {
	// Source is the image's dataref.
	Source string `json:"source"`
	// Thumbnail is the thumbnail's dataref.
	Thumbnail string `json:"thumbnail"`
	// Width and Height are the thumbnail's.
	Width  int `json:"width"`
	Height int `json:"height"`
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ref := r.Header.Get("Ce-Dataref")
	if ref == "" {
		var o objectstore.Object // the event data carries bucket and key too
		if err := json.NewDecoder(r.Body).Decode(&o); err == nil && o.Bucket != "" && o.Key != "" {
			ref = objectstore.DataRef(o.Bucket, o.Key)
		}
	}
	res, err := h.thumbnail(r.Context(), ref)
	var perm *permanentError
	switch {
	case errors.As(err, &perm):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	case err != nil:
		w.Header().Set("Retry-After", "5")
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
	default:
		h.logger().InfoContext(r.Context(), "thumbnail written", "source", res.Source, "thumbnail", res.Thumbnail,
			"task", r.Header.Get("Tasklane-Task-Id"))
		writeJSON(w, http.StatusOK, res)
	}
}

func (h *Handler) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.Default()
	}
	return h.Logger
}

// permanentError is a problem retrying does not fix.
type permanentError struct{ msg string }

func (e *permanentError) Error() string { return e.msg }

func permanent(format string, args ...any) error {
	return &permanentError{msg: fmt.Sprintf(format, args...)}
}

func (h *Handler) thumbnail(ctx context.Context, ref string) (*Result, error) {
	bucket, key, err := objectstore.ParseDataRef(ref)
	if err != nil {
		return nil, permanent("no image to read: %v", err)
	}
	prefix := h.Prefix
	if prefix == "" {
		prefix = PrefixDefault
	}
	if strings.HasPrefix(key, prefix) {
		return nil, permanent("%s is a thumbnail already (narrow the trigger's prefix so thumbnails do not trigger it)", key)
	}
	obj, err := h.S3.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	defer obj.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(&limitReader{r: obj, n: MaxImageBytes}); err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, permanent("%s: no such object (deleted since?)", ref)
		}
		return nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	src, _, err := image.Decode(&buf)
	if err != nil {
		return nil, permanent("%s is not an image this function reads (jpeg, png, gif): %v", ref, err)
	}
	size := h.Size
	if size <= 0 {
		size = SizeDefault
	}
	thumb := Scale(src, size)
	var out bytes.Buffer
	if err := png.Encode(&out, thumb); err != nil {
		return nil, permanent("encoding the thumbnail: %v", err)
	}
	tkey := prefix + key + ".png"
	if _, err := h.S3.PutObject(ctx, bucket, tkey, &out, int64(out.Len()), minio.PutObjectOptions{ContentType: "image/png"}); err != nil {
		return nil, fmt.Errorf("writing %s: %w", tkey, err)
	}
	b := thumb.Bounds()
	return &Result{Source: ref, Thumbnail: objectstore.DataRef(bucket, tkey), Width: b.Dx(), Height: b.Dy()}, nil
}

// limitReader fails past n bytes instead of truncating silently.
type limitReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, permanent("image larger than %d bytes", MaxImageBytes)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// Scale shrinks src to fit size x size, keeping its aspect ratio, by
// averaging the source pixels each thumbnail pixel covers. An image that
// fits already is copied as it is.
func Scale(src image.Image, size int) *image.RGBA {
	sb := src.Bounds()
	sw, sh := sb.Dx(), sb.Dy()
	w, h := sw, sh
	if sw > size || sh > size {
		if sw >= sh {
			w, h = size, max(1, sh*size/sw)
		} else {
			w, h = max(1, sw*size/sh), size
		}
	}
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		y0, y1 := sb.Min.Y+y*sh/h, sb.Min.Y+max((y+1)*sh/h, y*sh/h+1)
		for x := range w {
			x0, x1 := sb.Min.X+x*sw/w, sb.Min.X+max((x+1)*sw/w, x*sw/w+1)
			var r, g, b, a, n uint64
			for sy := y0; sy < y1; sy++ {
				for sx := x0; sx < x1; sx++ {
					cr, cg, cb, ca := src.At(sx, sy).RGBA()
					r, g, b, a, n = r+uint64(cr), g+uint64(cg), b+uint64(cb), a+uint64(ca), n+1
				}
			}
			dst.Set(x, y, color.RGBA64{R: uint16(r / n), G: uint16(g / n), B: uint16(b / n), A: uint16(a / n)})
		}
	}
	return dst
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
