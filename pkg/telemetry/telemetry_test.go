package telemetry_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasklane/tasklane/pkg/telemetry"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestWanted(t *testing.T) {
	on, off := true, false
	tests := []struct {
		name string
		cfg  telemetry.Config
		want bool
	}{
		{"Nothing", telemetry.Config{}, false},
		{"ConfigEndpoint", telemetry.Config{Endpoint: "http://127.0.0.1:4318"}, true},
		{"EnvEndpoint", telemetry.Config{Getenv: env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})}, true},
		{"EnvTracesEndpoint", telemetry.Config{Getenv: env(map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})}, true},
		{"EnabledFalseWins", telemetry.Config{Enabled: &off, Endpoint: "http://127.0.0.1:4318"}, false},
		{"EnabledTrue", telemetry.Config{Enabled: &on}, true},
		{"SDKDisabled", telemetry.Config{Endpoint: "http://c:4318", Getenv: env(map[string]string{"OTEL_SDK_DISABLED": "true"})}, false},
		{"Stdout", telemetry.Config{Stdout: &bytes.Buffer{}}, true},
		{"OtherVariablesAlone", telemetry.Config{Getenv: env(map[string]string{"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"})}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, telemetry.Wanted(tt.cfg))
		})
	}
}

func TestProtocol(t *testing.T) {
	require.Equal(t, telemetry.ProtocolHTTP, telemetry.Protocol(telemetry.Config{}))
	require.Equal(t, telemetry.ProtocolGRPC, telemetry.Protocol(telemetry.Config{Getenv: env(map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})}))
	require.Equal(t, telemetry.ProtocolHTTP, telemetry.Protocol(telemetry.Config{Protocol: telemetry.ProtocolHTTP,
		Getenv: env(map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})}), "the config wins")
}

// TestSetupOffChangesNothing: with nothing configured Setup installs no
// provider and no exporter; instrumentation stays off.
func TestSetupOffChangesNothing(t *testing.T) {
	before := otel.GetTracerProvider()
	p, err := telemetry.Setup(context.Background(), telemetry.Config{})
	require.NoError(t, err)
	require.False(t, p.On())
	require.False(t, telemetry.Enabled())
	require.Equal(t, before, otel.GetTracerProvider())
	_, isSDK := otel.GetTracerProvider().(*sdktrace.TracerProvider)
	require.False(t, isSDK)
	_, span := telemetry.Tracer().Start(context.Background(), "x")
	require.False(t, span.IsRecording())
	require.NoError(t, p.Shutdown(context.Background()))
}

// TestSetupStdoutAndGRPC: spans go to the stdout writer; a gRPC exporter
// is made (it connects lazily); Shutdown flushes and turns tracing off.
func TestSetupStdoutAndGRPC(t *testing.T) {
	var out bytes.Buffer
	ratio := 1.0
	p, err := telemetry.Setup(context.Background(), telemetry.Config{
		Stdout: &out, Endpoint: "http://127.0.0.1:1", Protocol: telemetry.ProtocolGRPC, SampleRatio: &ratio, ServiceName: "svc",
	})
	require.NoError(t, err)
	require.True(t, p.On())
	require.True(t, telemetry.Enabled())
	ctx, span := telemetry.Tracer().Start(context.Background(), "hello")
	tp, _ := telemetry.Inject(ctx)
	require.True(t, strings.HasPrefix(tp, "00-"+span.SpanContext().TraceID().String()))
	span.End()
	sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_ = p.Shutdown(sctx) // the gRPC endpoint is unreachable: its flush may fail
	require.False(t, telemetry.Enabled())
	require.Contains(t, out.String(), `"Name":"hello"`)
	require.Contains(t, out.String(), `"Value":"svc"`)
}

func TestSetupRefusesUnknownProtocol(t *testing.T) {
	_, err := telemetry.Setup(context.Background(), telemetry.Config{Endpoint: "http://c:4318", Protocol: "http/json"})
	require.ErrorContains(t, err, `OTLP protocol "http/json"`)
	require.False(t, telemetry.Enabled())
}

func TestExtract(t *testing.T) {
	ctx := telemetry.Extract(context.Background(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "")
	sc := trace.SpanContextFromContext(ctx)
	require.True(t, sc.IsValid())
	require.True(t, sc.IsRemote())
	require.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", sc.TraceID().String())
	require.False(t, trace.SpanContextFromContext(telemetry.Extract(context.Background(), "garbage", "")).IsValid())
	require.False(t, trace.SpanContextFromContext(telemetry.Extract(context.Background(), "", "")).IsValid())
}
