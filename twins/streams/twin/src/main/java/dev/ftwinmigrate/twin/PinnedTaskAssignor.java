package dev.ftwinmigrate.twin;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SortedMap;
import java.util.SortedSet;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.GroupAssignment;
import org.apache.kafka.clients.consumer.ConsumerPartitionAssignor.GroupSubscription;
import org.apache.kafka.streams.processor.TaskId;
import org.apache.kafka.streams.processor.assignment.ApplicationState;
import org.apache.kafka.streams.processor.assignment.KafkaStreamsAssignment;
import org.apache.kafka.streams.processor.assignment.KafkaStreamsAssignment.AssignedTask;
import org.apache.kafka.streams.processor.assignment.KafkaStreamsState;
import org.apache.kafka.streams.processor.assignment.ProcessId;
import org.apache.kafka.streams.processor.assignment.TaskAssignor;
import org.apache.kafka.streams.processor.assignment.TaskInfo;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A KIP-924 task assignor (StreamsConfig {@code task.assignor.class}) for a planned handover to a
 * Kafka Streams standby replica: every active task goes to a client tagged
 * {@value #ROLE_TAG}={@value #ACTIVE} ({@code client.tag.ftwin.role}, the twin's {@code -role})
 * while one is in the group, spread over them if there are several; with none (the active member
 * left), over every client. Where it has a choice, an active task goes where its state is: to the
 * client that ran it, else to the one with the lowest changelog lag (a warm standby), within a
 * share of the tasks proportional to the client's stream threads. Each stateful task then gets
 * {@code num.standby.replicas} standby tasks (at most one per other client) on clients other
 * than its active's, preferring clients not tagged active, then clients that hold its state, then
 * the client with fewest standbys.
 *
 * <p>It assigns tasks to clients (Streams' processes); Streams spreads a client's tasks over its
 * threads, and, rebalancing cooperatively, holds back an active task moving between clients
 * until its old owner has revoked it (a follow-up rebalance). No warm-up replicas and no probing
 * rebalances: an active task pinned to a fresh active client restores there while it waits.
 *
 * <p>The decision is {@link #plan}, a pure function of the clients' roles, threads and state
 * (tested without Kafka); {@link #assign} only reads the {@link ApplicationState} into it.
 */
public final class PinnedTaskAssignor implements TaskAssignor {
    /** The client tag (after StreamsConfig.CLIENT_TAG_PREFIX) that names a client's role. */
    public static final String ROLE_TAG = "ftwin.role";
    public static final String ACTIVE = "active";
    public static final String STANDBY = "standby";

    /** A client's cost for a task it holds no state of (or, stateless, did not run). */
    static final long NO_STATE = Long.MAX_VALUE;
    /** A client's cost for a task it holds state of, of an unknown lag. */
    static final long UNKNOWN_LAG = Long.MAX_VALUE / 2;
    // Streams' lag sums (ClientState.computeTaskLags): a running, caught-up active task's and an
    // unknown offset's (Task.LATEST_OFFSET, UNKNOWN_OFFSET_SUM).
    private static final long LATEST_OFFSET = -2L;

    private static final Logger LOG = LoggerFactory.getLogger(PinnedTaskAssignor.class);

    /** What {@link #plan} knows of a client. */
    record Client<C>(C id, String role, int threads, Map<TaskId, Long> cost) {
        Client {
            threads = Math.max(1, threads);
            cost = Map.copyOf(cost);
        }

        boolean pinned() {
            return ACTIVE.equals(role);
        }

        long costFor(TaskId t) {
            return cost.getOrDefault(t, NO_STATE);
        }
    }

    /** A client's tasks. */
    record Tasks(SortedSet<TaskId> active, SortedSet<TaskId> standby) {
        Tasks() {
            this(new TreeSet<>(), new TreeSet<>());
        }
    }

    /**
     * The assignment of tasks (true: stateful) to clients with standbys standby replicas of each
     * stateful task: every client has an entry, every task one active, and no client a standby of
     * its own active task. A client's cost for a task is how far its state of the task is behind
     * (0: it ran the task, caught up), {@link #NO_STATE} if it holds none.
     */
    static <C extends Comparable<C>> Map<C, Tasks> plan(List<Client<C>> clients, SortedMap<TaskId, Boolean> tasks, int standbys) {
        List<Client<C>> all = new ArrayList<>(clients);
        all.sort(Comparator.comparing(Client::id));
        Map<C, Tasks> out = new LinkedHashMap<>();
        for (Client<C> c : all) {
            out.put(c.id(), new Tasks());
        }
        if (all.isEmpty() || tasks.isEmpty()) {
            return out;
        }
        List<Client<C>> cands = all.stream().filter(Client::pinned).toList();
        if (cands.isEmpty()) {
            cands = all;
        }

        // Active tasks: each client gets at most its share (by threads, rounded up); first every
        // (task, client) with the client's state by increasing cost, then the rest to the least
        // loaded.
        int totalThreads = cands.stream().mapToInt(Client::threads).sum();
        Map<C, Integer> cap = new HashMap<>(), load = new HashMap<>();
        for (Client<C> c : cands) {
            cap.put(c.id(), (int) Math.ceil((double) tasks.size() * c.threads() / totalThreads));
            load.put(c.id(), 0);
        }
        Map<TaskId, C> owner = new HashMap<>();
        record Pair<C>(TaskId task, Client<C> client, long cost) {}
        List<Pair<C>> pairs = new ArrayList<>();
        for (TaskId t : tasks.keySet()) {
            for (Client<C> c : cands) {
                if (c.costFor(t) != NO_STATE) {
                    pairs.add(new Pair<>(t, c, c.costFor(t)));
                }
            }
        }
        pairs.sort(Comparator.<Pair<C>>comparingLong(Pair::cost).thenComparing(Pair::task).thenComparing(p -> p.client().id()));
        for (Pair<C> p : pairs) {
            C id = p.client().id();
            if (!owner.containsKey(p.task()) && load.get(id) < cap.get(id)) {
                owner.put(p.task(), id);
                load.merge(id, 1, Integer::sum);
            }
        }
        for (TaskId t : tasks.keySet()) {
            if (owner.containsKey(t)) {
                continue;
            }
            Client<C> best = null;
            for (Client<C> c : cands) { // the lowest (load + 1) / threads, then the first by id
                if (best == null || (long) (load.get(c.id()) + 1) * best.threads() < (long) (load.get(best.id()) + 1) * c.threads()) {
                    best = c;
                }
            }
            owner.put(t, best.id());
            load.merge(best.id(), 1, Integer::sum);
        }
        owner.forEach((t, c) -> out.get(c).active().add(t));

        // Standby tasks, of the stateful tasks only, never beside their active.
        int replicas = Math.min(Math.max(standbys, 0), all.size() - 1);
        Map<C, Integer> standbyLoad = new HashMap<>();
        all.forEach(c -> standbyLoad.put(c.id(), 0));
        for (Map.Entry<TaskId, Boolean> e : tasks.entrySet()) {
            TaskId t = e.getKey();
            if (!e.getValue()) {
                continue;
            }
            for (int r = 0; r < replicas; r++) {
                Client<C> best = null;
                for (Client<C> c : all) {
                    if (c.id().equals(owner.get(t)) || out.get(c.id()).standby().contains(t)) {
                        continue;
                    }
                    if (best == null || standbyOrder(t, standbyLoad).compare(c, best) < 0) {
                        best = c;
                    }
                }
                out.get(best.id()).standby().add(t);
                standbyLoad.merge(best.id(), 1, Integer::sum);
            }
        }
        return out;
    }

    private static <C extends Comparable<C>> Comparator<Client<C>> standbyOrder(TaskId t, Map<C, Integer> standbyLoad) {
        return Comparator.<Client<C>, Boolean>comparing(Client::pinned)
            .thenComparing(c -> c.costFor(t) == NO_STATE)
            .thenComparing(c -> standbyLoad.get(c.id()))
            .thenComparingLong(c -> c.costFor(t))
            .thenComparing(Client::id);
    }

    /**
     * A client's costs for the tasks: for a stateful task it holds state of (ran as active or
     * standby), its lag (0 for a running active), {@link #UNKNOWN_LAG} when Streams knows no lag;
     * for a stateless task, 0 if it ran it. Tasks it holds nothing of are left out.
     */
    static Map<TaskId, Long> costs(Map<TaskId, Boolean> tasks, Set<TaskId> prevActive, Set<TaskId> prevStandby, Map<TaskId, Long> lagSums) {
        Map<TaskId, Long> cost = new HashMap<>();
        for (Map.Entry<TaskId, Boolean> e : tasks.entrySet()) {
            TaskId t = e.getKey();
            boolean ran = prevActive.contains(t);
            if (!e.getValue()) {
                if (ran) {
                    cost.put(t, 0L);
                }
                continue;
            }
            if (!ran && !prevStandby.contains(t)) {
                continue;
            }
            Long lag = lagSums == null ? null : lagSums.get(t);
            if (lag == null) {
                cost.put(t, ran ? 0L : UNKNOWN_LAG);
            } else if (lag == LATEST_OFFSET) {
                cost.put(t, 0L);
            } else {
                cost.put(t, lag >= 0 ? lag : UNKNOWN_LAG);
            }
        }
        return cost;
    }

    @Override
    public TaskAssignment assign(ApplicationState app) {
        Map<ProcessId, KafkaStreamsState> states;
        boolean lags = true;
        try {
            states = app.kafkaStreamsStates(true);
        } catch (RuntimeException e) {
            LOG.warn("PinnedTaskAssignor: no task lags ({}): assigning by the tasks' previous owners", e.toString());
            states = app.kafkaStreamsStates(false);
            lags = false;
        }
        SortedMap<TaskId, Boolean> tasks = new TreeMap<>();
        for (Map.Entry<TaskId, TaskInfo> e : app.allTasks().entrySet()) {
            tasks.put(e.getKey(), e.getValue().isStateful());
        }
        List<Client<ProcessId>> clients = new ArrayList<>();
        for (KafkaStreamsState st : states.values()) {
            Map<TaskId, Long> lagSums = null;
            if (lags) {
                try {
                    lagSums = st.statefulTasksToLagSums();
                } catch (RuntimeException e) {
                    // this client's lags are unknown
                }
            }
            String role = st.clientTags() == null ? null : st.clientTags().get(ROLE_TAG);
            clients.add(new Client<>(st.processId(), role, st.numProcessingThreads(),
                costs(tasks, st.previousActiveTasks(), st.previousStandbyTasks(), lagSums)));
        }
        Map<ProcessId, Tasks> plan = plan(clients, tasks, app.assignmentConfigs().numStandbyReplicas());
        List<KafkaStreamsAssignment> out = new ArrayList<>();
        StringBuilder log = new StringBuilder();
        for (Client<ProcessId> c : clients) {
            Tasks t = plan.get(c.id());
            Set<AssignedTask> assigned = new java.util.HashSet<>();
            t.active().forEach(id -> assigned.add(new AssignedTask(id, AssignedTask.Type.ACTIVE)));
            t.standby().forEach(id -> assigned.add(new AssignedTask(id, AssignedTask.Type.STANDBY)));
            out.add(KafkaStreamsAssignment.of(c.id(), assigned));
            log.append(' ').append(c.id()).append(" (role ").append(c.role() == null ? "-" : c.role()).append("): active ")
                .append(t.active()).append(" standby ").append(t.standby()).append(';');
        }
        LOG.info("PinnedTaskAssignor: {} tasks, {} clients{}:{}", tasks.size(), clients.size(), lags ? "" : " (no lags)", log);
        return new TaskAssignment(Collections.unmodifiableList(out));
    }

    @Override
    public void onAssignmentComputed(GroupAssignment assignment, GroupSubscription subscription, AssignmentError error) {
        if (error != AssignmentError.NONE) {
            LOG.error("PinnedTaskAssignor: Streams refused the assignment: {}", error);
        }
    }
}
