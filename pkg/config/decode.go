package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// position is where a field path was found in the file.
type position struct {
	line, col int
}

// Bounds on what the decoder walks, so a hostile document (alias bombs, merge
// cycles) cannot make it loop or take unbounded time.
const (
	decodeBudget  = 1 << 18 // values decoded, counting alias expansions
	maxMergeDepth = 16
)

var (
	durationType = reflect.TypeFor[Duration]()
	yamlLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
	digitsRE     = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`) // an integer too large for !!int resolves as !!float
)

// parseYAML parses data into its root content node, nil for an empty document.
func parseYAML(file string, data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The yaml package turns its own failures into errors; anything else
		// escaping it is a bug there, and operator input must not crash us.
		if r := recover(); r != nil {
			root, err = nil, &Error{File: file, Msg: fmt.Sprintf("invalid YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(file, err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(file, err)
	default:
		return nil, &Error{File: file, Line: next.Line, Column: next.Column,
			Msg: "found a second YAML document (only one is allowed)"}
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// yamlError converts a syntax error from the yaml package.
func yamlError(file string, err error) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: file, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{File: file, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// decoder decodes a yaml.Node tree into Go values strictly, collecting every
// problem and the position of every field path it sees.
type decoder struct {
	file    string
	errs    []*Error
	pos     map[string]position
	bad     map[string]bool // paths whose value could not be decoded
	set     map[string]bool // paths given a non-null scalar value
	dropped int             // problems beyond maxErrors
	budget  int

	mergeErrs map[*yaml.Node]bool // merge values already reported
}

func newDecoder(file string) *decoder {
	return &decoder{
		file:      file,
		pos:       map[string]position{},
		bad:       map[string]bool{},
		set:       map[string]bool{},
		mergeErrs: map[*yaml.Node]bool{},
		budget:    decodeBudget,
	}
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		d.dropped++ // joinErrors says how many more there were
		return
	}
	e := &Error{File: d.file, Field: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	d.errs = append(d.errs, e)
}

// badValue reports a value that could not be decoded; validation problems at
// or under path are then not reported (they would only repeat it).
func (d *decoder) badValue(n *yaml.Node, path, format string, args ...any) {
	d.errorf(n, path, format, args...)
	d.bad[path] = true
}

// isBad reports whether field is at or under a path that failed to decode.
func (d *decoder) isBad(field string) bool {
	for p := field; ; {
		if d.bad[p] {
			return true
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			return false
		}
		p = p[:i]
	}
}

func (d *decoder) decodeRoot(n *yaml.Node, c *Config) {
	n = resolve(n)
	if n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "", "the config must be a mapping of sections (server, broker, functions, ...), got %s", describe(n))
		return
	}
	d.decodeStruct("", n, reflect.ValueOf(c).Elem())
}

// decode decodes n into v, whose field path is path.
func (d *decoder) decode(path string, n *yaml.Node, v reflect.Value) {
	if !d.spend(n, path) {
		return
	}
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = position{n.Line, n.Column}
	}
	n = resolve(n)
	if n == nil || isNull(n) {
		return
	}
	t := v.Type()
	if n.Kind == yaml.ScalarNode {
		d.set[path] = true
	}
	switch {
	case t == durationType:
		if n.Kind != yaml.ScalarNode {
			d.badValue(n, path, "expected a duration (e.g. 30s, 5m, 1h), got %s", describe(n))
			return
		}
		dur, err := ParseDuration(n.Value)
		if err != nil {
			d.badValue(n, path, "%v", err)
			return
		}
		v.SetInt(int64(dur))
	case t.Kind() == reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.badValue(n, path, "expected a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case t.Kind() == reflect.Int || t.Kind() == reflect.Int64:
		var i int64
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && (n.ShortTag() != "!!float" || !digitsRE.MatchString(n.Value))) {
			d.badValue(n, path, "expected an integer, got %s", describe(n))
			return
		}
		if n.Decode(&i) != nil || v.OverflowInt(i) {
			d.badValue(n, path, "integer %s out of range", n.Value)
			return
		}
		v.SetInt(i)
	case t.Kind() == reflect.Float64:
		var f float64
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") || n.Decode(&f) != nil {
			d.badValue(n, path, "expected a number, got %s", describe(n))
			return
		}
		v.SetFloat(f)
	case t.Kind() == reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
			d.badValue(n, path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.badValue(n, path, "expected a list, got %s", describe(n))
			return
		}
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.decode(fmt.Sprintf("%s[%d]", path, i), item, s.Index(i))
		}
		v.Set(s)
	case t.Kind() == reflect.Pointer:
		p := reflect.New(t.Elem())
		d.decode(path, n, p.Elem())
		v.Set(p)
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.badValue(n, path, "expected a mapping, got %s", describe(n))
			return
		}
		d.decodeStruct(path, n, v)
	default:
		panic(fmt.Sprintf("config: no decoder for %s at %s", t, path)) // programmer error
	}
}

// decodeStruct decodes mapping n into struct v, reporting unknown and
// duplicate keys.
func (d *decoder) decodeStruct(path string, n *yaml.Node, v reflect.Value) {
	fields := structFields(v.Type())
	seen := map[string]*yaml.Node{}
	for _, p := range d.mappingPairs(path, n, map[*yaml.Node]bool{}, seen) {
		key := p.key.Value
		child := joinPath(path, key)
		idx, ok := fields.index[key]
		if !ok {
			best := closest(key, fields.names)
			if best == "" {
				d.errorf(p.key, child, "unknown key (known keys: %s)", strings.Join(fields.names, ", "))
				continue
			}
			d.errorf(p.key, child, "unknown key (did you mean %q?)", best)
			if seen[best] == nil {
				// The misspelt key stands for the absent one: do not also
				// report that as missing.
				d.bad[joinPath(path, best)] = true
			}
			continue
		}
		d.decode(child, p.value, v.Field(idx))
	}
}

type pair struct {
	key, value *yaml.Node
}

// mappingPairs returns n's key/value pairs: its own keys first, then keys
// merged in with "<<" that it does not set itself (earlier merges win). seen
// holds the keys already taken, mapped to their key node; active holds the
// mappings being merged, to catch a merge that includes itself.
func (d *decoder) mappingPairs(path string, n *yaml.Node, active map[*yaml.Node]bool, seen map[string]*yaml.Node) []pair {
	var pairs []pair
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if !d.spend(k, path) {
			return pairs
		}
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			continue
		}
		rk := resolve(k)
		if rk == nil || rk.Kind != yaml.ScalarNode {
			d.errorf(k, path, "expected a string key, got %s", describe(rk))
			continue
		}
		if first, dup := seen[rk.Value]; dup {
			if len(active) == 0 { // a merged key is overridden, not duplicated
				d.errorf(k, joinPath(path, rk.Value), "duplicate key %q (first at line %d)", rk.Value, first.Line)
			}
			continue
		}
		seen[rk.Value] = k
		pairs = append(pairs, pair{rk, val})
	}
	if len(merges) == 0 {
		return pairs
	}
	active[n] = true
	defer delete(active, n)
	for _, m := range merges {
		rm := resolve(m)
		sources := []*yaml.Node{rm}
		if rm != nil && rm.Kind == yaml.SequenceNode {
			sources = sources[:0]
			for _, s := range rm.Content {
				sources = append(sources, resolve(s))
			}
		}
		for _, s := range sources {
			switch {
			case !d.spend(m, path):
				return pairs
			case s == nil || s.Kind != yaml.MappingNode:
				d.mergeError(m, path, "merge (<<) needs a mapping or a list of mappings, got "+describe(s))
			case active[s]:
				d.mergeError(m, path, "merge (<<) includes the mapping it is in")
			case len(active) >= maxMergeDepth:
				d.mergeError(m, path, "merges (<<) nested too deeply")
			default:
				pairs = append(pairs, d.mappingPairs(path, s, active, seen)...)
			}
		}
	}
	return pairs
}

// mergeError reports a problem with the merge value m once, however many
// times m is merged in.
func (d *decoder) mergeError(m *yaml.Node, path, msg string) {
	if d.mergeErrs[m] {
		return
	}
	d.mergeErrs[m] = true
	d.errorf(m, path, "%s", msg)
}

// spend takes one unit of the decode budget, reporting (once) when it is
// exhausted.
func (d *decoder) spend(n *yaml.Node, path string) bool {
	d.budget--
	if d.budget == -1 {
		d.errorf(n, path, "document too large or contains excessive aliasing")
	}
	return d.budget >= 0
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// resolve follows aliases.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names what n is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch {
	case n == nil:
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		v := n.Value
		if utf8.RuneCountInString(v) > 40 {
			v = string([]rune(v)[:40]) + "..."
		}
		return strconv.Quote(v)
	default:
		return "an unexpected node"
	}
}

// fieldSet is a struct's yaml keys.
type fieldSet struct {
	index map[string]int // yaml key -> field index
	names []string       // yaml keys in field order
}

var fieldCache sync.Map // reflect.Type -> *fieldSet

func structFields(t reflect.Type) *fieldSet {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fieldSet)
	}
	fs := &fieldSet{index: map[string]int{}}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fs.index[name] = i
		fs.names = append(fs.names, name)
	}
	fieldCache.Store(t, fs)
	return fs
}

// closest returns the known key closest to key when it is close enough to be a
// typo of it (a few edits, or only case, '_' and '-' differ), else "".
func closest(key string, known []string) string {
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	}
	best, bestDist := "", -1
	for _, k := range known {
		dist := editDistance(strings.ToLower(key), k)
		if norm(key) == norm(k) {
			dist = 0
		}
		if bestDist < 0 || dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if bestDist < 0 || bestDist > max(2, len(key)/3) || bestDist >= len(key) {
		return ""
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and adjacent transpositions cost 1.
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	if len(ra) > 64 || len(rb) > 64 {
		return max(len(ra), len(rb)) // too long to be a typo of a known key
	}
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}

// keepExplicitZeros undoes defaulting where the file set a zero value
// explicitly ("max_attempts: 0", "addr: \"\""), so that Validate reports it
// instead of silently replacing it. raw is the decoded value, out the same
// value after WithDefaults.
func (d *decoder) keepExplicitZeros(path string, raw, out reflect.Value) {
	switch raw.Kind() {
	case reflect.Struct:
		fields := structFields(raw.Type())
		for _, name := range fields.names {
			i := fields.index[name]
			d.keepExplicitZeros(joinPath(path, name), raw.Field(i), out.Field(i))
		}
	case reflect.Slice:
		for i := range min(raw.Len(), out.Len()) {
			d.keepExplicitZeros(fmt.Sprintf("%s[%d]", path, i), raw.Index(i), out.Index(i))
		}
	case reflect.Pointer:
		if !raw.IsNil() && !out.IsNil() {
			d.keepExplicitZeros(path, raw.Elem(), out.Elem())
		}
	default:
		if d.set[path] && raw.IsZero() && out.CanSet() {
			out.Set(raw)
		}
	}
}
