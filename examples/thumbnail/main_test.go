package main

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/stretchr/testify/require"

	"github.com/tasklane/tasklane/triggers/objectstore"
	"github.com/tasklane/tasklane/triggers/objectstore/objectstoretest"
)

func TestScale(t *testing.T) {
	t.Parallel()
	src := image.NewRGBA(image.Rect(0, 0, 400, 100))
	for x := range 400 {
		for y := range 100 {
			c := color.RGBA{A: 255}
			if x < 200 {
				c.R = 255
			}
			src.Set(x, y, c)
		}
	}
	th := Scale(src, 128)
	require.Equal(t, image.Rect(0, 0, 128, 32), th.Bounds())
	require.Equal(t, color.RGBA{R: 255, A: 255}, th.At(10, 10))
	require.Equal(t, color.RGBA{A: 255}, th.At(120, 10))
	require.Equal(t, image.Rect(0, 0, 2, 3), Scale(image.NewRGBA(image.Rect(0, 0, 2, 3)), 128).Bounds(), "small images keep their size")
	require.Equal(t, image.Rect(0, 0, 1, 128), Scale(image.NewRGBA(image.Rect(0, 0, 3, 1000)), 128).Bounds())
}

func TestHandler(t *testing.T) {
	t.Parallel()
	s3 := objectstoretest.NewServer(t)
	s3.MakeBucket(t, "images")
	var img bytes.Buffer
	require.NoError(t, png.Encode(&img, image.NewGray(image.Rect(0, 0, 640, 480))))
	s3.Put(t, "images", "uploads/cat 1.png", img.String())
	s3.Put(t, "images", "uploads/notes.txt", "not an image")
	srv := httptest.NewServer(&Handler{S3: s3.Client})
	t.Cleanup(srv.Close)

	call := func(key string) (int, string) {
		req, err := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(`{}`))
		require.NoError(t, err)
		req.Header.Set("Ce-Dataref", objectstore.DataRef("images", key))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, body := call("uploads/cat 1.png")
	require.Equal(t, http.StatusOK, status, body)
	var res Result
	require.NoError(t, json.Unmarshal([]byte(body), &res))
	require.Equal(t, Result{Source: "s3://images/uploads/cat%201.png", Thumbnail: "s3://images/thumbnails/uploads/cat%201.png.png", Width: 128, Height: 96}, res)
	obj, err := s3.Client.GetObject(t.Context(), "images", "thumbnails/uploads/cat 1.png.png", minio.GetObjectOptions{})
	require.NoError(t, err)
	th, err := png.Decode(obj)
	require.NoError(t, err)
	require.Equal(t, image.Rect(0, 0, 128, 96), th.Bounds())

	status, body = call("uploads/notes.txt")
	require.Equal(t, http.StatusBadRequest, status, "not an image: not retried: %s", body)
	status, body = call("uploads/gone.png")
	require.Equal(t, http.StatusBadRequest, status, "no such object: %s", body)
	status, body = call("thumbnails/uploads/cat 1.png.png")
	require.Equal(t, http.StatusBadRequest, status, "thumbnails are not thumbnailed: %s", body)
	s3.Close()
	status, body = call("uploads/cat 1.png")
	require.Equal(t, http.StatusServiceUnavailable, status, "the store is down: retried: %s", body)
}
