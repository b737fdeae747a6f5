"""kafka-python's admin client on the data lifecycle and the cluster: DescribeLogDirs asked of
every broker reports every partition once with its size, DeleteRecords moves a partition's
start, which a consumer then sees, and DescribeCluster lists the brokers Metadata does. Exits
non-zero with a message on any mismatch."""

import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
TOPIC = "python-lifecycle"
PARTITIONS = 3
COUNT = 300

admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="python-admin")
admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
producer = KafkaProducer(bootstrap_servers=bootstrap)
for i in range(COUNT):
    producer.send(TOPIC, value=b"v" * 200, partition=i % PARTITIONS)
producer.flush()
producer.close()

# Every broker (each shard is one) answers for the partitions it hosts.
sizes = {}
log_dir_answers = admin.describe_log_dirs()
for answer in log_dir_answers:
    for log_dir in answer["log_dirs"]:
        assert log_dir["error_code"] == 0, log_dir
        assert log_dir["log_dir"], log_dir
        # Version 4 carries the filesystem's size (kafka-python asks for the newest it knows).
        if "total_bytes" in log_dir:
            assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"], log_dir
        for topic in log_dir["topics"]:
            if topic["name"] != TOPIC:
                continue
            for partition in topic["partitions"]:
                index = partition["partition_index"]
                assert index not in sizes, f"partition {index} reported twice"
                sizes[index] = partition["partition_size"]
assert sorted(sizes) == list(range(PARTITIONS)), sizes
assert all(size > COUNT // PARTITIONS * 200 for size in sizes.values()), sizes

deleted = admin.delete_records({TopicPartition(TOPIC, 0): 40})
assert deleted[TopicPartition(TOPIC, 0)]["low_watermark"] == 40, deleted

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
start = consumer.beginning_offsets([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
consumer.close()
assert start == {TopicPartition(TOPIC, 0): 40, TopicPartition(TOPIC, 1): 0,
                 TopicPartition(TOPIC, 2): 0}, start
# DescribeCluster: the brokers Metadata lists, the controller among them, no authorizer.
cluster = admin.describe_cluster()
# describe_log_dirs asked every broker that Metadata lists.
metadata_brokers = {answer["broker"] for answer in log_dir_answers}
described = {broker["broker_id"] for broker in cluster["brokers"]}
assert described == metadata_brokers, (cluster, metadata_brokers)
assert cluster["controller_id"] in described, cluster
assert cluster["cluster_id"], cluster
# kafka-python turns the bit field into operation names.
operations = cluster.get("authorized_operations", cluster.get("cluster_authorized_operations"))
assert operations is not None and "DESCRIBE" in operations, cluster
print(f"log dirs described for {PARTITIONS} partitions; records below 40 deleted")
print(f"cluster described: {len(described)} brokers")
