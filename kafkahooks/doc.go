// Package kafkahooks lets a Kafka consumer running in a container take part in its own live
// migration. The application serves a small HTTP/1.1 + JSON protocol (version 3, specified in
// PROTOCOL.md next to this file) on a Unix socket inside its container, by default
// /run/ftwin-migrate/hook.sock (environment FTWIN_HOOK_SOCKET overrides it). The migrator reaches
// that socket from the host through /proc/<container init pid>/root/run/ftwin-migrate/hook.sock;
// no port is published.
//
// The protocol has four calls:
//
//	POST /v1/prepare  stop fetching, finish the records in hand, commit (end the open transaction),
//	                  then hold: no fetch, no open transaction. Answers the Boundary: group, member,
//	                  generation and the committed offsets (the next offsets to consume).
//	POST /v1/resume   on the restored copy: re-initialise the Kafka client (a new transactional
//	                  producer epoch fences any other copy with the same transactional.id, a new
//	                  static member id fences its consumer), continue from the boundary, and answer
//	                  the offsets fetching resumed from once it has.
//	POST /v1/abort    on the source after a rolled-back migration: carry on from the boundary.
//	GET  /v1/status   "running" or "prepared" (or "shadow"), with the committed offsets, the
//	                  application's capabilities and a shadow's replay progress.
//
// Version 2 adds migration by replay, for applications whose state is a deterministic function of
// their input (capability "replay", LoopConfig.Digest): POST /v2/release lets the source carry on
// after its snapshot; POST /v2/shadow turns the restored copy into a shadow that replays the log
// outside the group and emits nothing; POST /v2/advance brings it to the cutover boundary and
// answers its state digest; resume then makes it take over. See shadow.go and PROTOCOL.md.
//
// Version 3 adds no call: it settles what versions 1 and 2 left open (optional generation, the
// boundary as the broker's stable offsets, deadlines and cancellation, no remembered answers; a
// request may bound the server's wait with HeaderTimeout), and defines capability CapHold — an
// application whose restored copy stays inert until resumed, as a Kafka Streams application with
// ftwin-hook (twins/streams/hook) is — for which the migrator never thaws the source once the copy
// was told to resume.
//
// Every request carries the header Ftwin-Hook-Protocol with the version it speaks (1 to 3). One request per connection: the server
// closes the connection after each response and the Client reads to end of file, so that no
// socket connected to the outside of the container is left for CRIU to dump.
//
// The application side is [Serve] (or [NewHandler] and [Listen]) over a [Participant]. [Loop] is a
// ready-made Participant for a franz-go consume-process-produce loop, transactional
// (exactly-once, through kgo.GroupTransactSession) or at-least-once. The migrator side is [Dial],
// whose [Client] has one method per call.
package kafkahooks
