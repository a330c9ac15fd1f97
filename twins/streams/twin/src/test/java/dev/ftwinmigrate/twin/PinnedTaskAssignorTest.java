package dev.ftwinmigrate.twin;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.ftwinmigrate.twin.PinnedTaskAssignor.Client;
import dev.ftwinmigrate.twin.PinnedTaskAssignor.Tasks;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Random;
import java.util.Set;
import java.util.SortedMap;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.UUID;
import org.apache.kafka.streams.processor.TaskId;
import org.apache.kafka.streams.processor.assignment.ApplicationState;
import org.apache.kafka.streams.processor.assignment.AssignmentConfigs;
import org.apache.kafka.streams.processor.assignment.KafkaStreamsAssignment;
import org.apache.kafka.streams.processor.assignment.KafkaStreamsAssignment.AssignedTask;
import org.apache.kafka.streams.processor.assignment.KafkaStreamsState;
import org.apache.kafka.streams.processor.assignment.ProcessId;
import org.apache.kafka.streams.processor.assignment.TaskInfo;
import org.apache.kafka.streams.processor.assignment.TaskTopicPartition;
import org.apache.kafka.streams.state.HostInfo;
import org.junit.jupiter.api.Test;

class PinnedTaskAssignorTest {
    static final long NONE = PinnedTaskAssignor.NO_STATE;

    static TaskId t(int p) {
        return new TaskId(0, p);
    }

    static SortedMap<TaskId, Boolean> stateful(int n) {
        SortedMap<TaskId, Boolean> m = new TreeMap<>();
        for (int p = 0; p < n; p++) {
            m.put(t(p), true);
        }
        return m;
    }

    static Map<TaskId, Long> cost(long... byPartition) {
        Map<TaskId, Long> m = new HashMap<>();
        for (int p = 0; p < byPartition.length; p++) {
            if (byPartition[p] != NONE) {
                m.put(t(p), byPartition[p]);
            }
        }
        return m;
    }

    static Client<String> client(String id, String role, long... cost) {
        return new Client<>(id, role, 1, cost(cost));
    }

    static Set<TaskId> ids(int... ps) {
        Set<TaskId> s = new TreeSet<>();
        for (int p : ps) {
            s.add(t(p));
        }
        return s;
    }

    /** Every task one active; every stateful task min(standbys, clients - 1) standbys, on distinct clients other than its active's. */
    static void checkValid(List<Client<String>> clients, SortedMap<TaskId, Boolean> tasks, int standbys, Map<String, Tasks> plan) {
        assertEquals(clients.size(), plan.size(), "an entry per client");
        Map<TaskId, Integer> active = new HashMap<>(), standby = new HashMap<>();
        for (Map.Entry<String, Tasks> e : plan.entrySet()) {
            for (TaskId id : e.getValue().active()) {
                active.merge(id, 1, Integer::sum);
                assertFalse(e.getValue().standby().contains(id), e.getKey() + " holds " + id + " active and standby");
            }
            for (TaskId id : e.getValue().standby()) {
                standby.merge(id, 1, Integer::sum);
                assertTrue(tasks.get(id), "a standby of stateless " + id);
            }
        }
        for (Map.Entry<TaskId, Boolean> e : tasks.entrySet()) {
            assertEquals(1, active.getOrDefault(e.getKey(), 0), "actives of " + e.getKey());
            int want = e.getValue() ? Math.min(standbys, clients.size() - 1) : 0;
            assertEquals(want, standby.getOrDefault(e.getKey(), 0), "standbys of " + e.getKey());
        }
    }

    @Test
    void everyActiveOnTheActiveClientEvenWhereTheStandbyIsWarmer() {
        List<Client<String>> cs = List.of(client("a", "active", NONE, NONE, NONE, NONE), client("s", "standby", 0, 0, 0, 0));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(4), 1);
        checkValid(cs, stateful(4), 1, plan);
        assertEquals(ids(0, 1, 2, 3), plan.get("a").active());
        assertEquals(ids(), plan.get("a").standby());
        assertEquals(ids(), plan.get("s").active());
        assertEquals(ids(0, 1, 2, 3), plan.get("s").standby());
    }

    @Test
    void theStandbyTakesEverythingOverWhenTheActiveLeft() {
        List<Client<String>> cs = List.of(client("s", "standby", 3, 0, 12, PinnedTaskAssignor.UNKNOWN_LAG));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(4), 1);
        checkValid(cs, stateful(4), 1, plan);
        assertEquals(ids(0, 1, 2, 3), plan.get("s").active());
        assertEquals(ids(), plan.get("s").standby(), "no other client for a standby");
    }

    @Test
    void aFreshActiveClientJoiningTakesTheActivesBack() {
        // the standby ran everything while the active was away; the active came back empty
        List<Client<String>> cs = List.of(client("s", "standby", 0, 0, 0), client("a", "active"));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(3), 1);
        checkValid(cs, stateful(3), 1, plan);
        assertEquals(ids(0, 1, 2), plan.get("a").active());
        assertEquals(ids(0, 1, 2), plan.get("s").standby());
    }

    @Test
    void severalActiveClientsShareTheActivesAndKeepTheirState() {
        List<Client<String>> cs = List.of(client("a1", "active", 0, NONE, 0, NONE), client("a2", "active", NONE, 0, NONE, 0),
            client("s", "standby", 5, 5, 5, 5));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(4), 1);
        checkValid(cs, stateful(4), 1, plan);
        assertEquals(ids(0, 2), plan.get("a1").active());
        assertEquals(ids(1, 3), plan.get("a2").active());
        assertEquals(ids(0, 1, 2, 3), plan.get("s").standby(), "standbys on the client not tagged active");

        // fresh: spread evenly
        cs = List.of(client("a1", "active"), client("a2", "active"), client("s", "standby"));
        plan = PinnedTaskAssignor.plan(cs, stateful(5), 1);
        checkValid(cs, stateful(5), 1, plan);
        assertEquals(3, plan.get("a1").active().size());
        assertEquals(2, plan.get("a2").active().size());
        assertEquals(5, plan.get("s").standby().size());
    }

    @Test
    void withoutAnActiveClientTasksGoWhereTheirStateIs() {
        // untagged clients: the previous owners keep their tasks; the lowest lag wins otherwise
        List<Client<String>> cs = List.of(client("x", null, 0, 0, 40, NONE), client("y", null, 9, 9, 2, NONE), client("z", null));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(4), 1);
        checkValid(cs, stateful(4), 1, plan);
        assertEquals(ids(0, 1), plan.get("x").active());
        assertTrue(plan.get("y").active().contains(t(2)));
        assertTrue(plan.get("z").active().contains(t(3)), "the stateless-held task to the least loaded: " + plan);
        assertTrue(plan.get("y").standby().containsAll(ids(0, 1)), "standbys where the state is: " + plan);
        assertTrue(plan.get("x").standby().contains(t(2)), plan.toString());
    }

    @Test
    void aShareLimitSpreadsTasksEvenIfOneClientHoldsAllTheState() {
        List<Client<String>> cs = List.of(client("x", null, 0, 0, 0, 0), client("y", null, NONE, NONE, NONE, 7));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(4), 0);
        checkValid(cs, stateful(4), 0, plan);
        assertEquals(2, plan.get("x").active().size());
        assertEquals(2, plan.get("y").active().size());
        assertTrue(plan.get("y").active().contains(t(3)), "y's state keeps its task there: " + plan);
    }

    @Test
    void sharesFollowThreads() {
        List<Client<String>> cs = List.of(new Client<>("a1", "active", 3, Map.of()), new Client<>("a2", "active", 1, Map.of()));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(8), 1);
        checkValid(cs, stateful(8), 1, plan);
        assertEquals(6, plan.get("a1").active().size());
        assertEquals(2, plan.get("a2").active().size());
    }

    @Test
    void statelessTasksGetNoStandbysAndStayWhereTheyRan() {
        SortedMap<TaskId, Boolean> tasks = new TreeMap<>(Map.of(t(0), true, new TaskId(1, 0), false, new TaskId(1, 1), false));
        List<Client<String>> cs = List.of(new Client<>("x", null, 1, Map.of(new TaskId(1, 1), 0L)), new Client<>("y", null, 1, Map.of()));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, tasks, 1);
        checkValid(cs, tasks, 1, plan);
        assertTrue(plan.get("x").active().contains(new TaskId(1, 1)), plan.toString());
    }

    @Test
    void moreStandbysThanOtherClientsAreCapped() {
        List<Client<String>> cs = List.of(client("a", "active"), client("s1", "standby"), client("s2", "standby"));
        Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, stateful(3), 5);
        checkValid(cs, stateful(3), 5, plan);
        assertEquals(ids(0, 1, 2), plan.get("s1").standby());
        assertEquals(ids(0, 1, 2), plan.get("s2").standby());
        assertTrue(PinnedTaskAssignor.plan(List.<Client<String>>of(), stateful(3), 1).isEmpty());
        assertEquals(new Tasks(), PinnedTaskAssignor.plan(cs, new TreeMap<>(), 1).get("a"));
    }

    @Test
    void randomGroupsAlwaysGetAValidAssignment() {
        Random r = new Random(42);
        for (int round = 0; round < 2000; round++) {
            int n = 1 + r.nextInt(5), tasks = r.nextInt(12), standbys = r.nextInt(3);
            SortedMap<TaskId, Boolean> ts = new TreeMap<>();
            for (int p = 0; p < tasks; p++) {
                ts.put(new TaskId(r.nextInt(2), p), r.nextInt(4) != 0);
            }
            List<Client<String>> cs = new ArrayList<>();
            for (int c = 0; c < n; c++) {
                Map<TaskId, Long> cost = new HashMap<>();
                for (TaskId id : ts.keySet()) {
                    if (r.nextBoolean()) {
                        cost.put(id, (long) r.nextInt(100));
                    }
                }
                String role = switch (r.nextInt(3)) {
                    case 0 -> "active";
                    case 1 -> "standby";
                    default -> null;
                };
                cs.add(new Client<>("c" + c, role, 1 + r.nextInt(3), cost));
            }
            Map<String, Tasks> plan = PinnedTaskAssignor.plan(cs, ts, standbys);
            checkValid(cs, ts, standbys, plan);
            if (cs.stream().anyMatch(Client::pinned)) {
                for (Client<String> c : cs) {
                    if (!c.pinned()) {
                        assertTrue(plan.get(c.id()).active().isEmpty(), "an active task off the active clients: " + plan);
                    }
                }
            }
        }
    }

    @Test
    void costsFromLagsOrPreviousOwners() {
        Map<TaskId, Boolean> tasks = Map.of(t(0), true, t(1), true, t(2), true, t(3), true, new TaskId(1, 0), false);
        Map<TaskId, Long> lags = Map.of(t(0), -2L, t(1), 17L, t(2), -3L, t(3), 500L);
        Map<TaskId, Long> c = PinnedTaskAssignor.costs(tasks, ids(0), ids(1, 2), lags);
        assertEquals(Map.of(t(0), 0L, t(1), 17L, t(2), PinnedTaskAssignor.UNKNOWN_LAG), c, "t3's lag is all of it: no state held");
        c = PinnedTaskAssignor.costs(tasks, Set.of(t(0), new TaskId(1, 0)), ids(1), null);
        assertEquals(Map.of(t(0), 0L, t(1), PinnedTaskAssignor.UNKNOWN_LAG, new TaskId(1, 0), 0L), c);
    }

    // The KIP-924 side, with the interfaces faked.

    record FakeState(ProcessId processId, Map<String, String> clientTags, SortedSet<TaskId> previousActiveTasks,
        SortedSet<TaskId> previousStandbyTasks, Map<TaskId, Long> lags) implements KafkaStreamsState {
        @Override
        public int numProcessingThreads() {
            return 1;
        }

        @Override
        public SortedSet<String> consumerClientIds() {
            return new TreeSet<>(Set.of(processId + "-consumer"));
        }

        @Override
        public long lagFor(TaskId task) {
            return statefulTasksToLagSums().get(task);
        }

        @Override
        public SortedSet<TaskId> prevTasksByLag(String consumer) {
            throw new UnsupportedOperationException();
        }

        @Override
        public Map<TaskId, Long> statefulTasksToLagSums() {
            if (lags == null) {
                throw new UnsupportedOperationException("no lags");
            }
            return lags;
        }

        @Override
        public Optional<HostInfo> hostInfo() {
            return Optional.empty();
        }

        @Override
        public Optional<String> rackId() {
            return Optional.empty();
        }
    }

    record FakeTask(TaskId id, boolean isStateful) implements TaskInfo {
        @Override
        public Set<String> stateStoreNames() {
            return isStateful ? Set.of(TwinTopology.STORE) : Set.of();
        }

        @Override
        public Set<TaskTopicPartition> topicPartitions() {
            return Set.of();
        }
    }

    static ApplicationState app(int standbys, boolean lagsFail, FakeState... states) {
        Map<ProcessId, KafkaStreamsState> m = new HashMap<>();
        for (FakeState s : states) {
            m.put(s.processId(), s);
        }
        Map<TaskId, TaskInfo> tasks = new HashMap<>();
        for (int p = 0; p < 3; p++) {
            tasks.put(t(p), new FakeTask(t(p), true));
        }
        return new ApplicationState() {
            @Override
            public Map<ProcessId, KafkaStreamsState> kafkaStreamsStates(boolean computeTaskLags) {
                if (computeTaskLags && lagsFail) {
                    throw new IllegalStateException("end offsets unknown");
                }
                return m;
            }

            @Override
            public AssignmentConfigs assignmentConfigs() {
                return new AssignmentConfigs(10_000L, 2, standbys, 600_000L, List.of());
            }

            @Override
            public Map<TaskId, TaskInfo> allTasks() {
                return tasks;
            }
        };
    }

    static Map<ProcessId, Map<TaskId, AssignedTask.Type>> byProcess(java.util.Collection<KafkaStreamsAssignment> as) {
        Map<ProcessId, Map<TaskId, AssignedTask.Type>> m = new HashMap<>();
        for (KafkaStreamsAssignment a : as) {
            Map<TaskId, AssignedTask.Type> ts = new TreeMap<>();
            a.tasks().forEach((id, task) -> ts.put(id, task.type()));
            assertFalse(m.containsKey(a.processId()), "one assignment per process");
            m.put(a.processId(), ts);
        }
        return m;
    }

    @Test
    void assignReadsRolesAndLagsFromTheApplicationState() {
        ProcessId a = new ProcessId(new UUID(0, 1)), s = new ProcessId(new UUID(0, 2));
        FakeState active = new FakeState(a, Map.of(PinnedTaskAssignor.ROLE_TAG, "active"), new TreeSet<>(), new TreeSet<>(), Map.of(t(0), 100L, t(1), 100L, t(2), 100L));
        FakeState standby = new FakeState(s, Map.of(PinnedTaskAssignor.ROLE_TAG, "standby"), new TreeSet<>(), new TreeSet<>(ids(0, 1, 2)), Map.of(t(0), 1L, t(1), 0L, t(2), 3L));
        var got = byProcess(new PinnedTaskAssignor().assign(app(1, false, active, standby)).assignment());
        assertEquals(Map.of(t(0), AssignedTask.Type.ACTIVE, t(1), AssignedTask.Type.ACTIVE, t(2), AssignedTask.Type.ACTIVE), got.get(a));
        assertEquals(Map.of(t(0), AssignedTask.Type.STANDBY, t(1), AssignedTask.Type.STANDBY, t(2), AssignedTask.Type.STANDBY), got.get(s));

        // the active member left: the standby takes every task, as active
        got = byProcess(new PinnedTaskAssignor().assign(app(1, false, standby)).assignment());
        assertEquals(Map.of(t(0), AssignedTask.Type.ACTIVE, t(1), AssignedTask.Type.ACTIVE, t(2), AssignedTask.Type.ACTIVE), got.get(s));
    }

    @Test
    void assignWithoutLagsOrTagsUsesThePreviousOwners() {
        ProcessId x = new ProcessId(new UUID(0, 1)), y = new ProcessId(new UUID(0, 2));
        FakeState fx = new FakeState(x, Map.of(), new TreeSet<>(ids(0, 1)), new TreeSet<>(ids(2)), null);
        FakeState fy = new FakeState(y, Map.of(), new TreeSet<>(ids(2)), new TreeSet<>(ids(0, 1)), null);
        var got = byProcess(new PinnedTaskAssignor().assign(app(1, true, fx, fy)).assignment());
        assertEquals(Map.of(t(0), AssignedTask.Type.ACTIVE, t(1), AssignedTask.Type.ACTIVE, t(2), AssignedTask.Type.STANDBY), got.get(x));
        assertEquals(Map.of(t(0), AssignedTask.Type.STANDBY, t(1), AssignedTask.Type.STANDBY, t(2), AssignedTask.Type.ACTIVE), got.get(y));
        assertNotEquals(got.get(x), got.get(y));
        assertEquals(new HashSet<>(List.of(x, y)), got.keySet());
    }
}
