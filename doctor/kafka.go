package doctor

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ftwin-migrate/ftwin-migrate/broker"
)

// kafkaCheck grades the Apache Kafka installation the lab's `--broker apache` and `lab kafka`
// use (home: broker.KafkaHome): the broker jar of broker.KafkaVersion and the tools' jar. It is
// never a blocker: migration needs no local Kafka, and the lab's default broker is kfake.
func kafkaCheck(home string) Check {
	home = broker.KafkaHome(home)
	row := Check{Name: "apache kafka"}
	brokerJar := filepath.Join(home, "libs", "kafka_2.13-"+broker.KafkaVersion+".jar")
	tools, _ := filepath.Glob(filepath.Join(home, "libs", "kafka-tools-"+broker.KafkaVersion+".jar"))
	switch {
	case fileExists(brokerJar) && len(tools) > 0:
		row.Status, row.Detail = OK, fmt.Sprintf("%s with its command-line tools in %s", broker.KafkaVersion, home)
		return row
	case fileExists(brokerJar):
		row.Detail = fmt.Sprintf("%s in %s, without its command-line tools (`lab kafka`)", broker.KafkaVersion, home)
	default:
		row.Detail = fmt.Sprintf("no Apache Kafka %s in %s", broker.KafkaVersion, home)
		var others []string
		jars, _ := filepath.Glob(filepath.Join(filepath.Dir(home), "kafka-*", "libs", "kafka_2.13-*.jar"))
		for _, j := range jars {
			others = append(others, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(j), "kafka_2.13-"), ".jar")+" in "+filepath.Dir(filepath.Dir(j)))
		}
		if len(others) > 0 {
			row.Detail += " (found " + strings.Join(others, ", ") + ")"
		}
		row.Detail += "; only `lab up --broker apache` and `lab kafka` need it"
	}
	row.Status, row.Fix = Warn, fixInstall+"; it assembles Apache Kafka "+broker.KafkaVersion+" and its tools from Maven Central"
	return row
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
