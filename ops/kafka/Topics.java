// Creates topics through Kafka's Admin API in one JVM (kafka-topics starts a
// JVM per topic: 16 topics took ~20 s on a 2-core machine), after waiting
// for the cluster to have every broker registered; then waits until every
// partition has a leader, so a client that starts next finds them all.
// It also has the group and transaction coordinators loaded: the broker
// creates __consumer_offsets and __transaction_state on first use, which
// otherwise costs the first consumer group and the first idempotent
// producer of a test seconds of "coordinator load in progress".
// Run by ops/kafka/cluster.py as a single-file source program:
//   java -cp 'lib/*' Topics.java BOOTSTRAP BROKERS TIMEOUT_S < topic lines
// with one topic a line: NAME PARTITIONS REPLICAS [KEY=VALUE ...].
// A topic that already exists is left as it is.  Exit 0 when all are ready.
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.TransactionalIdNotFoundException;

public class Topics {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int brokers = Integer.parseInt(args[1]);
        long deadline = System.currentTimeMillis() + Long.parseLong(args[2]) * 1000;
        List<NewTopic> topics = new ArrayList<>();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        for (String line; (line = in.readLine()) != null; ) {
            String[] f = line.trim().split("\\s+");
            if (f.length < 3)
                continue;
            Map<String, String> config = new HashMap<>();
            for (int i = 3; i < f.length; i++) {
                int eq = f[i].indexOf('=');
                config.put(f[i].substring(0, eq), f[i].substring(eq + 1));
            }
            topics.add(new NewTopic(f[0], Integer.parseInt(f[1]), Short.parseShort(f[2])).configs(config));
        }
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "5000");   // keeps to the deadline
        try (Admin admin = Admin.create(p)) {
            while (true) {
                try {
                    int n = admin.describeCluster().nodes().get().size();
                    if (n >= brokers)
                        break;
                } catch (ExecutionException e) {
                    // not up yet
                }
                check(deadline, brokers + " brokers registered");
                Thread.sleep(100);
            }
            for (NewTopic t : topics) {
                try {
                    admin.createTopics(List.of(t)).all().get();
                } catch (ExecutionException e) {
                    if (!(e.getCause() instanceof TopicExistsException))
                        throw e;
                }
            }
            while (!coordinatorsReady(admin))
                check(deadline, "the group and transaction coordinators");
            List<String> names = new ArrayList<>();
            for (NewTopic t : topics)
                names.add(t.name());
            while (!names.isEmpty() && !allLed(admin, names))
                check(deadline, "a leader for every partition of " + names);
        }
    }

    private static boolean allLed(Admin admin, List<String> names) throws InterruptedException {
        try {
            for (TopicDescription d : admin.describeTopics(names).allTopicNames().get().values())
                for (TopicPartitionInfo pi : d.partitions())
                    if (pi.leader() == null || pi.leader().isEmpty())
                        return false;
            return true;
        } catch (ExecutionException e) {
            Thread.sleep(100);
            return false;
        }
    }

    private static boolean coordinatorsReady(Admin admin) throws InterruptedException {
        String probe = "mailfleet-cluster-ready";
        try {
            admin.listConsumerGroupOffsets(probe).all().get();
            admin.describeTransactions(List.of(probe)).all().get();
            return true;
        } catch (ExecutionException e) {
            if (e.getCause() instanceof TransactionalIdNotFoundException)
                return true;   // the coordinator answered: it is loaded
            Thread.sleep(100);
            return false;
        }
    }

    private static void check(long deadline, String what) {
        if (System.currentTimeMillis() > deadline) {
            System.err.println("Topics: timed out waiting for " + what);
            System.exit(1);
        }
    }
}
