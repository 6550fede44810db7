package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Error is one problem in a configuration. [Parse] and [Config.Validate]
// return an [errors.Join] of them; use [errors.As] or unwrap the join to reach
// each one.
type Error struct {
	// File is the file the config was read from; empty for a Config built in Go.
	File string
	// Line is the 1-based line of the problem; 0 when unknown.
	Line int
	// Column is the 1-based column of the problem; 0 when unknown.
	Column int
	// Field is the field path, e.g. "functions[1].retry.max_backoff"; empty for
	// a problem with the document itself.
	Field string
	// Msg describes the problem.
	Msg string
}

// Error formats e as "file:line:col: field.path: message", leaving out the
// parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteByte(':')
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteByte(':')
		if e.Column > 0 {
			b.WriteString(strconv.Itoa(e.Column))
			b.WriteByte(':')
		}
	}
	if b.Len() > 0 {
		b.WriteByte(' ')
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// maxErrors bounds the problems reported at once.
const maxErrors = 200

// joinErrors joins errs sorted by position (problems without a position last,
// in the order found), or returns nil when there are none. Past maxErrors, it
// only counts them; dropped counts those left out already.
func joinErrors(errs []*Error, dropped int) error {
	if len(errs) == 0 {
		return nil
	}
	sorted := slices.Clone(errs)
	slices.SortStableFunc(sorted, func(a, b *Error) int {
		return compareLineCol(a.Line, a.Column, b.Line, b.Column)
	})
	if more := max(0, len(sorted)-maxErrors) + dropped; more > 0 {
		sorted = sorted[:min(len(sorted), maxErrors)]
		sorted = append(sorted, &Error{File: sorted[0].File, Msg: fmt.Sprintf("too many problems: %d more not shown", more)})
	}
	out := make([]error, len(sorted))
	for i, e := range sorted {
		out[i] = e
	}
	return errors.Join(out...)
}

// compareLineCol orders positions, unknown (0) lines last.
func compareLineCol(l1, c1, l2, c2 int) int {
	switch {
	case l1 == l2:
		return c1 - c2
	case l1 == 0:
		return 1
	case l2 == 0:
		return -1
	default:
		return l1 - l2
	}
}
