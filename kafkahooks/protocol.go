package kafkahooks

import (
	"context"
	"errors"
	"os"
	"strconv"
)

// Version is the protocol version this package speaks.
const Version = 1

// HeaderVersion is the request (and response) header carrying the protocol version.
const HeaderVersion = "Ftwin-Hook-Protocol"

// DefaultSocketPath is where the application serves the protocol, inside its container.
const DefaultSocketPath = "/run/ftwin-migrate/hook.sock"

// SocketEnv names the environment variable that overrides DefaultSocketPath.
const SocketEnv = "FTWIN_HOOK_SOCKET"

// SocketPath is the socket the application serves on: $FTWIN_HOOK_SOCKET, or DefaultSocketPath.
func SocketPath() string {
	if p := os.Getenv(SocketEnv); p != "" {
		return p
	}
	return DefaultSocketPath
}

// Offsets are committed offsets (the next offset to consume) by topic and partition. In JSON
// the partitions are strings: {"sensors":{"0":123,"1":98}}.
type Offsets = map[string]map[int32]int64

// State is what an application reports in its status.
type State string

// The states of the protocol.
const (
	// StateRunning: fetching and processing.
	StateRunning State = "running"
	// StatePrepared: holding at a boundary, no fetch and no open transaction.
	StatePrepared State = "prepared"
)

// Boundary is the answer to prepare: where the application stopped.
type Boundary struct {
	Protocol      int    `json:"protocol"`
	Group         string `json:"group"`
	MemberID      string `json:"member_id"`
	InstanceID    string `json:"instance_id"`
	Generation    int32  `json:"generation"`
	Transactional bool   `json:"transactional"`
	// Offsets are the group's committed offsets at the boundary. A partition without a
	// committed offset is absent.
	Offsets          Offsets `json:"offsets"`
	RecordsProcessed int64   `json:"records_processed"`
}

// Status is the answer to status.
type Status struct {
	Protocol int     `json:"protocol"`
	State    State   `json:"state"`
	Offsets  Offsets `json:"offsets"`
}

// resumeResponse is the answer to resume.
type resumeResponse struct {
	Protocol int     `json:"protocol"`
	Offsets  Offsets `json:"offsets"`
}

// errorResponse is the body of every 4xx and 5xx answer.
type errorResponse struct {
	Error string `json:"error"`
}

// Participant is the application side of the protocol. The server serialises Prepare, Resume
// and Abort (never two at once); Status may run concurrently with them.
type Participant interface {
	// Prepare brings the application to a boundary and holds it there. Calling it again while
	// prepared returns the same boundary.
	Prepare(ctx context.Context) (Boundary, error)
	// Resume continues from the boundary (on the restored copy) and returns the offsets
	// fetching resumed from, once it has. Without a prepare it returns ErrNotPrepared.
	Resume(ctx context.Context) (Offsets, error)
	// Abort continues from the boundary on the source after a rolled-back migration. It is a
	// no-op when running.
	Abort(ctx context.Context) error
	// Status reports the state and the committed offsets.
	Status() Status
}

// ErrNotPrepared is what a Participant returns when asked to resume without a prepare. The
// server answers it with 409 Conflict.
var ErrNotPrepared = errors.New("not prepared")

// Error is a protocol error answer (4xx or 5xx) as the Client sees it.
type Error struct {
	// Op is the call: prepare, resume, abort or status.
	Op string
	// StatusCode is the HTTP status.
	StatusCode int
	// Message is the server's "error" field.
	Message string
}

func (e *Error) Error() string {
	return "kafkahooks: " + e.Op + ": " + strconv.Itoa(e.StatusCode) + " " + e.Message
}

// Is makes errors.Is(err, ErrNotPrepared) hold for a 409 answer.
func (e *Error) Is(target error) bool {
	return target == ErrNotPrepared && e.StatusCode == 409
}
