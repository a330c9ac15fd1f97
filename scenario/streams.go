package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ftwin-migrate/ftwin-migrate/jvmimage"
)

// Kafka Streams twin (twins/streams): its main class, image name and where `make java` puts
// the application (its jar and lib/), relative to the repository.
const (
	StreamsMainClass = "dev.ftwinmigrate.twin.StreamsTwin"
	StreamsImage     = "ftwin.local/streams-twin:latest"
	StreamsAppDir    = "twins/streams/twin/target/app"
)

// The Kafka Streams twin's standby replica (Config.Standby), the way a Streams user runs one
// for a planned handover: both members run with num.standby.replicas=1 and the twin's
// PinnedTaskAssignor, which puts every active task on the member tagged active while it is in
// the group and the standby tasks on the other. The active member leaves the group when it
// stops (SIGTERM), so the standby takes its tasks over at once from its warm stores rather
// than after session.timeout.ms. Flags given later override earlier ones.
var (
	StreamsActiveArgs  = []string{"-role", "active", "-standby-replicas", "1", "-leave-on-close", "true"}
	StreamsStandbyArgs = []string{"-role", "standby", "-standby-replicas", "1", "-instance-id", "twin-standby", "-hook-socket", ""}
)

// FindStreamsApp returns the Kafka Streams twin's application directory: dir if given, else
// StreamsAppDir under the working directory or above the executable's directory (bin/..).
func FindStreamsApp(dir string) (string, error) {
	cands := []string{dir}
	if dir == "" {
		cands = []string{StreamsAppDir}
		if exe, err := os.Executable(); err == nil {
			cands = append(cands, filepath.Join(filepath.Dir(exe), "..", StreamsAppDir))
		}
	}
	for _, c := range cands {
		if _, err := os.Stat(filepath.Join(c, "streams-twin.jar")); err == nil {
			return filepath.Abs(c)
		}
	}
	if dir != "" {
		return "", fmt.Errorf("scenario: %s holds no streams-twin.jar: build it with `make java`", dir)
	}
	return "", errors.New("scenario: the Kafka Streams twin is not built (no " + StreamsAppDir + "/streams-twin.jar here or beside the executable): run `make java`")
}

// BuildStreamsTwin writes the image archive of the Kafka Streams twin, from its application
// directory (FindStreamsApp), to out: a jlink'd JRE and the application (package jvmimage).
func BuildStreamsTwin(ctx context.Context, appDir, out string) error {
	return jvmimage.WriteArchive(ctx, jvmimage.Config{AppDir: appDir, MainClass: StreamsMainClass}, StreamsImage, out)
}
