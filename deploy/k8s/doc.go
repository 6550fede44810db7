// Package k8s holds Tasklane's Kubernetes manifests (base/, overlays/) and
// their offline checks: every manifest decodes strictly into the
// Kubernetes API types and KEDA's, with no cluster and no network. It is a
// module of its own so that the main module does not depend on k8s.io.
package k8s
