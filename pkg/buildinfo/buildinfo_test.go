package buildinfo

import (
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestFrom(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		want Info
	}{
		{"NoBuildInfo", nil, Info{Version: VersionDevel, Commit: CommitUnknown}},
		{"Devel", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "(devel)"}},
			Info{Version: VersionDevel, Commit: CommitUnknown, Go: "go1.26.0"}},
		{"EmptyVersion", &debug.BuildInfo{GoVersion: "go1.26.0"},
			Info{Version: VersionDevel, Commit: CommitUnknown, Go: "go1.26.0"}},
		{"Tagged", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v1.2.3"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.modified", Value: "false"}}},
			Info{Version: "v1.2.3", Commit: "0123abc", Go: "go1.26.0"}},
		{"Dirty", &debug.BuildInfo{GoVersion: "go1.26.0", Main: debug.Module{Version: "v0.0.0-20261204194355-0123abc4567d+dirty"},
			Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123abc"}, {Key: "vcs.modified", Value: "true"}}},
			Info{Version: "v0.0.0-20261204194355-0123abc4567d+dirty", Commit: "0123abc-dirty", Go: "go1.26.0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := From(tc.bi)
			if tc.want.Go == "" {
				tc.want.Go = got.Go // the running toolchain's
				require.NotEmpty(t, got.Go)
			}
			require.Equal(t, tc.want, got)
		})
	}
}
