// Package agent is the receiving side of a migration: an HTTPS service (mutual TLS, see
// package pki) on the target host that takes blobs, restores the container in its containerd,
// verifies it and commits or aborts, and the client the migrator uses to drive it.
//
// The protocol is versioned: every request carries the header Ftwin-Protocol, and a peer
// speaking another version gets 400 with an error that names both versions. A migration is a
// session: blobs written for it live under a containerd lease of its own, so an abort (or a
// session left idle past its timeout, as when the migrator dies) removes every trace of it.
//
//	GET  /v1/hello                      Hello
//	POST /v1/cpuinfo/check              body: CRIU cpuinfo.img of the source; 409 if incompatible
//	POST /v1/sessions                   SessionRequest → Session
//	POST /v1/sessions/{id}/missing      []Descriptor → []Descriptor (blobs the target lacks)
//	PUT  /v1/sessions/{id}/blobs?digest=&size=&mediatype=   body: zstd stream of the blob
//	PUT  /v1/sessions/{id}/criu-image   body: zstd stream of a tar of the CRIU image directory → ImageReceived
//	POST /v1/sessions/{id}/restore      RestoreRequest → RestoreResult
//	POST /v1/sessions/{id}/verify       → VerifyResult
//	*    /v1/sessions/{id}/hook/{path}  relays METHOD /{path} to the restored container's hook socket
//	POST /v1/sessions/{id}/heartbeat    keeps a restored, uncommitted copy alive (see Session)
//	POST /v1/sessions/{id}/commit
//	POST /v1/sessions/{id}/abort
//	GET  /v1/containers/{namespace}/{id}          ContainerState (for recovery after a crashed migrator)
//	POST /v1/containers/{namespace}/{id}/abort    abort its session, or remove it if uncommitted
package agent

import (
	"time"

	"github.com/checkpoint-restore/go-criu/v7/stats"

	"github.com/ftwin-migrate/ftwin-migrate/restore"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ProtocolVersion is the version of the agent protocol this build speaks (2: the agent names
// checkpoint images, sessions heartbeat, the hook relay is generic).
const ProtocolVersion = 2

// ProtocolHeader carries the protocol version on every request and response.
const ProtocolHeader = "Ftwin-Protocol"

// Hello describes the agent and its host.
type Hello struct {
	Protocol          int    `json:"protocol"`
	Host              string `json:"host"`
	ContainerdVersion string `json:"containerd_version"`
	CRIUVersion       string `json:"criu_version"`
	Arch              string `json:"arch"`
	FreeBytes         uint64 `json:"free_bytes"` // free space where the agent keeps CRIU images
	// ClockWarning says why a container restored on this host may not keep its clocks
	// (doctor.Clocks); empty when it does, or from an agent too old to say.
	ClockWarning string `json:"clock_warning,omitempty"`
}

// Network modes for the restored container's TCP connections.
const (
	// TCPClose restores established connections closed: the application sees an error and
	// reconnects (the target host has another address). The default.
	TCPClose = restore.TCPClose
	// TCPEstablished restores them open; only for a target that takes over the source's address.
	TCPEstablished = restore.TCPEstablished
)

// SessionRequest opens a migration session.
type SessionRequest struct {
	Namespace string `json:"namespace"`
	Container string `json:"container"`
	// TCP is TCPClose or TCPEstablished ("" means TCPClose).
	TCP restore.TCPMode `json:"tcp"`
	// Probe, if set, is an http:// URL the agent GETs from the target host to verify the
	// restored container (2xx is healthy).
	Probe string `json:"probe,omitempty"`
	// BaseImage is the container's base image: the target must hold it (it is not sent along).
	BaseImage string `json:"base_image,omitempty"`
	// SourceHost is what the source calls itself; the agent logs it beside the name in the
	// source's certificate, which is the one it trusts.
	SourceHost string `json:"source_host"`
	// HookSocket, if set, is the path inside the container of the application's migration hook
	// (a Unix socket serving HTTP, see package hooksock): a clean absolute path. Requests to
	// .../hook/{path} reach it.
	HookSocket string `json:"hook_socket,omitempty"`
	// Address, when set, is the container's own address on a network source and target share
	// (its spec names a network namespace of its own): the agent gives the restored container
	// a network namespace with the same address and MAC (Config.Network) and announces it once
	// restored, so that TCP connections restored established carry on. An agent without a
	// Config.Network refuses the session.
	Address *ContainerAddress `json:"address,omitempty"`
}

// ContainerAddress is a container's place on a network hosts share.
type ContainerAddress struct {
	// IP is the address with its prefix length, such as "10.231.0.100/24".
	IP string `json:"ip"`
	// MAC is its link-layer address, such as "02:fa:0a:e7:00:64".
	MAC string `json:"mac"`
}

// Session is an open migration session.
type Session struct {
	ID      string        `json:"id"`
	Timeout time.Duration `json:"timeout_ns"` // idle time after which the agent aborts it
	// HeartbeatTimeout: once a copy is restored, the agent aborts the session (killing the
	// uncommitted copy) when it hears nothing from the migrator this long.
	HeartbeatTimeout time.Duration `json:"heartbeat_timeout_ns"`
}

// RestoreRequest asks the agent to restore the container from the checkpoint index it received.
type RestoreRequest struct {
	Index ocispec.Descriptor `json:"index"`
	// ImageDigest, when set, is the digest of the CRIU image directory sent to /criu-image; the
	// agent restores from that directory, and only if what it received has this digest.
	ImageDigest string `json:"image_digest,omitempty"`
}

// ImageReceived is the agent's answer to a CRIU image upload.
type ImageReceived struct {
	Digest string `json:"digest"` // sha256 of the uncompressed tar, hex
}

// RestoreResult says how the restore went.
type RestoreResult struct {
	Duration time.Duration `json:"duration_ns"`
	Pid      uint32        `json:"pid"`
	// Log is the file on the target host where the restored container's stdout and stderr go.
	Log string `json:"log,omitempty"`
	// CRIU is CRIU's restore statistics (restore_time, forking_time in µs, pages_restored, ...).
	CRIU *stats.RestoreStatsEntry `json:"criu_restore_statistics,omitempty"`
}

// VerifyResult says whether the restored container is healthy.
type VerifyResult struct {
	Running bool   `json:"running"`
	Probe   string `json:"probe,omitempty"` // outcome of the health probe, if any
}

// RelayHeader marks an answer that comes from the restored container's hook, relayed as it is;
// an answer without it is the agent's own (an error of the relay).
const RelayHeader = "Ftwin-Relay"

// HookHeaderPrefix names the headers the relay passes through in both directions.
const HookHeaderPrefix = "Ftwin-Hook-"

type errorBody struct {
	Error string `json:"error"`
}

// CommittedLabel marks a container the agent committed a migration of (its value: the session).
const CommittedLabel = "ftwin-migrate.dev/committed"

// RestoredForLabel marks a container the agent restored, with the name (from its certificate)
// of the peer it restored it for: only that peer may ask about it or undo it.
const RestoredForLabel = "ftwin-migrate.dev/restored-for"

// CheckpointPrefix starts the names of the checkpoint images the agent registers; it names
// them itself (CheckpointPrefix + session id) and never updates an existing image.
const CheckpointPrefix = "ftwin-migrate.dev/received/"

// ContainerState is what the agent knows of a container, for a migrator recovering from a crash.
type ContainerState struct {
	Exists    bool   `json:"exists"`
	Running   bool   `json:"running"`
	Committed bool   `json:"committed"`         // a migration of it was committed here
	Session   string `json:"session,omitempty"` // an open session restoring it
}
