package kafkahooks

import (
	"context"
	"errors"
	"os"
	"slices"
	"strconv"
	"time"
)

// Version is the protocol version this package speaks. A server of this version also answers
// version 1 and 2 requests (their calls are unchanged), and says in each answer's "protocol"
// field the version the request spoke. Version 3 adds no call: it settles what versions 1 and 2
// left to the implementer (PROTOCOL.md, "Version 3"), lets a request bound the server's wait
// (HeaderTimeout), and adds capability CapHold and the fields Boundary.Capabilities,
// Status.OffsetsSource and Status.CommitInterval.
const Version = 3

// MinVersion is the oldest version a server of this package answers.
const MinVersion = 1

// CapReplay is the capability (Status.Capabilities) of an application that can be migrated by
// replay: its state is a deterministic function of the records it processed (see PROTOCOL.md),
// and it answers /v2/release, /v2/shadow and /v2/advance and reports a digest of its state.
const CapReplay = "replay"

// CapHold is the capability (version 3, Boundary.Capabilities and Status.Capabilities) of an
// application whose copy restored from a dump of it while prepared holds as the source did — no
// fetch, no processing, no transaction, no produce; at most its consumer's heartbeats — until it
// is resumed or aborted; which answers a resume only from the prepared state (a running copy
// answers 409, never a remembered answer), after fencing every other copy, with the committed
// offsets read from the broker then, and stays held (409) when they are not the boundary. For
// such an application the migrator never thaws the source once it has told the copy to resume:
// a failure after that keeps the copy, not the source (see migrate).
const CapHold = "hold"

// HeaderVersion is the request (and response) header carrying the protocol version.
const HeaderVersion = "Ftwin-Hook-Protocol"

// HeaderTimeout is the request header (version 3) with the milliseconds the client waits for
// the answer: the server gives the call no longer than that (or its own deadline, if shorter)
// and answers 504 when it runs out. The Client sets it from its context's deadline.
const HeaderTimeout = "Ftwin-Hook-Timeout-Ms"

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

// State is what an application reports in its status.
type State string

// The states of the protocol.
const (
	// StateRunning: fetching and processing.
	StateRunning State = "running"
	// StatePrepared: holding at a boundary, no fetch and no open transaction.
	StatePrepared State = "prepared"
	// StateShadow: a restored copy told it is a shadow (version 2): its old Kafka clients are
	// dropped without a word to the broker, and it replays its input partitions with a
	// read-only consumer outside the group, emitting nothing, up to the source's committed
	// offsets (or the offsets of an advance).
	StateShadow State = "shadow"
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
	// Digest is a digest of the application's state at the boundary (version 2, applications
	// with CapReplay): two copies that processed the same records have the same digest.
	Digest string `json:"digest,omitempty"`
	// Capabilities are those of the application (version 3: CapHold, CapReplay), so that the
	// migrator knows them without a status call.
	Capabilities []string `json:"capabilities,omitempty"`
}

// Can reports whether the boundary names capability c.
func (b Boundary) Can(c string) bool { return slices.Contains(b.Capabilities, c) }

// Status is the answer to status.
type Status struct {
	// Protocol is the version the answer speaks. The Client sets it to the server's own
	// version (its answer header), so a caller learns whether version 2 calls can be made.
	Protocol int     `json:"protocol"`
	State    State   `json:"state"`
	Offsets  Offsets `json:"offsets"`
	// Capabilities are what the application can do beyond version 1 (CapReplay). Version 2.
	Capabilities []string `json:"capabilities,omitempty"`
	// While a shadow (version 2): Position is the next offset to apply per partition, Limit
	// the offsets it replays up to (the source's committed offsets, refreshed from the
	// broker, or those of an advance), Lag the records between them, LagTime the record time
	// between the newest record it holds below Limit and the last one it applied, Replayed
	// the records applied since it became a shadow.
	Position Offsets       `json:"position,omitempty"`
	Limit    Offsets       `json:"limit,omitempty"`
	Lag      int64         `json:"lag_records,omitempty"`
	LagTime  time.Duration `json:"lag_ns,omitempty"`
	Replayed int64         `json:"replayed,omitempty"`
	// OffsetsSource says where Offsets come from (version 3): "broker" (read from the broker
	// for this answer) or "local" (what the application last committed, as it knows it).
	OffsetsSource string `json:"offsets_source,omitempty"`
	// CommitInterval is the longest a running application may take between commits (version
	// 3; a Kafka Streams application's commit.interval.ms): the migrator gives a resumed copy at
	// least that long to commit before it calls it stuck.
	CommitInterval time.Duration `json:"commit_interval_ns,omitempty"`
}

// Can reports whether the status names capability c.
func (s Status) Can(c string) bool { return slices.Contains(s.Capabilities, c) }

// Advanced is the answer to advance: the shadow's position (the offsets of the advance) and
// the digest of its state there.
type Advanced struct {
	Protocol int     `json:"protocol"`
	Offsets  Offsets `json:"offsets"`
	Digest   string  `json:"digest"`
}

// advanceRequest is the body of an advance.
type advanceRequest struct {
	Offsets Offsets `json:"offsets"`
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

// Replayer is a Participant that can be migrated by replay (version 2, CapReplay). The server
// serialises its calls with those of Participant.
type Replayer interface {
	Participant
	// Release continues on the source after a snapshot was taken at the boundary, with the
	// same Kafka clients (nothing else can have fenced them), and returns the boundary's
	// offsets. It is a no-op when running.
	Release(ctx context.Context) (Offsets, error)
	// Shadow turns a restored, prepared copy into a shadow (StateShadow) and returns the
	// offsets its replay starts from (its boundary).
	Shadow(ctx context.Context) (Offsets, error)
	// Advance has the shadow apply the records up to exactly to (the source's boundary at
	// the cutover) and returns the digest of its state there.
	Advance(ctx context.Context, to Offsets) (Advanced, error)
}

// ErrNotPrepared is what a Participant returns when asked to resume without a prepare. The
// server answers it with 409 Conflict.
var ErrNotPrepared = errors.New("not prepared")

// ErrState is what a Participant returns for a call its state does not allow (shadow when not
// prepared, advance when not a shadow, a shadow past the offsets of an advance). 409 Conflict.
var ErrState = errors.New("not allowed in this state")

// ErrNoReplay is what the server answers (501) for a version 2 replay call to a Participant
// that is not a Replayer.
var ErrNoReplay = errors.New("this application cannot be migrated by replay")

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

// Is makes errors.Is(err, ErrNotPrepared) and errors.Is(err, ErrState) hold for a 409 answer,
// errors.Is(err, ErrNoReplay) for a 501, and errors.Is(err, context.DeadlineExceeded) for a 504
// (the server ran out of the time the request gave it, HeaderTimeout, or of its own).
func (e *Error) Is(target error) bool {
	switch target {
	case context.DeadlineExceeded:
		return e.StatusCode == 504
	case ErrNotPrepared, ErrState:
		return e.StatusCode == 409
	case ErrNoReplay:
		return e.StatusCode == 501
	}
	return false
}
