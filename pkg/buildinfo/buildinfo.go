// Package buildinfo reports the version and VCS commit the running binary
// was built from, as runtime/debug.ReadBuildInfo records them: `tasklane
// version`, /healthz and the tasklane_build_info metric show them.
package buildinfo

import (
	"runtime"
	"runtime/debug"
)

// Unknown values.
const (
	// VersionDevel is the version of a binary built without a module
	// version (go build in a checkout, go test), as the go command says it.
	VersionDevel = "(devel)"
	// CommitUnknown is the commit of a binary built without VCS
	// information (-buildvcs=false, or not from a checkout).
	CommitUnknown = "unknown"
)

// Info is what the binary knows of its build.
type Info struct {
	// Version is the main module's version (a tag, or a pseudo-version
	// that names the commit), or VersionDevel.
	Version string `json:"version"`
	// Commit is the VCS revision, with "-dirty" when the work tree had
	// changes, or CommitUnknown.
	Commit string `json:"commit"`
	// Go is the Go version that built the binary.
	Go string `json:"go"`
}

// Read returns the running binary's build information.
func Read() Info {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		bi = nil
	}
	return From(bi)
}

// From returns the build information bi records; a nil bi gives the
// unknown values.
func From(bi *debug.BuildInfo) Info {
	info := Info{Version: VersionDevel, Commit: CommitUnknown, Go: runtime.Version()}
	if bi == nil {
		return info
	}
	if bi.GoVersion != "" {
		info.Go = bi.GoVersion
	}
	if v := bi.Main.Version; v != "" {
		info.Version = v
	}
	var modified bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			if s.Value != "" {
				info.Commit = s.Value
			}
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if modified && info.Commit != CommitUnknown {
		info.Commit += "-dirty"
	}
	return info
}
