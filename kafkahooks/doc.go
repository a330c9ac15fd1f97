// Package kafkahooks will let a Kafka consumer take part in its own migration: prepare (stop
// fetching, commit at a boundary), resume (reconnect, fence the zombie source, continue from the
// boundary) and abort. It implements migrate.Hook. Not built yet: see issue 4.
package kafkahooks
