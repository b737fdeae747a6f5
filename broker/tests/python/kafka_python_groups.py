"""kafka-python (an independent client implementation) as a consumer group against the broker:
three members share a topic and read every record exactly once between them, commit, and a
new member resumes from the commits; the admin client lists, describes, reads the offsets of
and deletes the group. Exits non-zero with a message on any mismatch."""

import sys
import threading
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
TOPIC = "py-groups"
GROUP = "py-trio"
PARTITIONS = 4
COUNT = 800
DEADLINE = time.monotonic() + 90


def check_deadline(what):
    if time.monotonic() > DEADLINE:
        sys.exit(f"timed out: {what}")


def produce(start, end):
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for i in range(start, end):
        producer.send(TOPIC, key=b"key-%d" % i, value=b"value-%d" % i, partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def member():
    return KafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=GROUP,
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         session_timeout_ms=6000, heartbeat_interval_ms=500)


admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="python-groups")
admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])

members = [member() for _ in range(3)]
seen = {}
lock = threading.Lock()
stop = threading.Event()


def run(index, consumer):
    # One thread per member, polling with a timeout longer than a join round trip:
    # kafka-python 3.0.12 drops a join that completes while no poll() is waiting on it and
    # sends a fresh JoinGroup, which makes short round-robin polls rebalance forever.
    while not stop.is_set():
        for records in consumer.poll(timeout_ms=500).values():
            with lock:
                for record in records:
                    seen.setdefault((record.partition, record.offset), []).append((index, record.value))


threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(members)]
for thread in threads:
    thread.start()

# Wait until the three own disjoint, non-empty shares covering every partition.
while True:
    check_deadline("three balanced members")
    shares = [{tp.partition for tp in consumer.assignment()} for consumer in members]
    if all(shares) and sum(map(len, shares)) == PARTITIONS and set().union(*shares) == set(range(PARTITIONS)):
        break
    time.sleep(0.05)
print(f"balanced: {shares}", flush=True)

produce(0, COUNT)
while True:
    with lock:
        if len(seen) >= COUNT:
            break
    check_deadline(f"every record ({len(seen)} of {COUNT})")
    time.sleep(0.05)
stop.set()
for thread in threads:
    thread.join()
for (partition, offset), readers in seen.items():
    assert len(readers) == 1, f"{partition}/{offset} read {len(readers)} times"
    index, value = readers[0]
    i = partition + PARTITIONS * offset
    assert value == b"value-%d" % i, (partition, offset, value)
    assert partition in shares[index], f"member {index} read partition {partition} it does not own"
print(f"{COUNT} records read exactly once by three members")

described = admin.describe_groups([GROUP])[GROUP]
assert described["group_state"] == "Stable", described
assert len(described["members"]) == 3, described
assert described["protocol_type"] == "consumer", described
assert described["protocol_data"] == "range", described
listed = admin.list_groups()
assert [(g["group_id"], g["protocol_type"]) for g in listed] == [(GROUP, "consumer")], listed

for consumer in members:
    consumer.commit()
    consumer.close()
offsets = admin.list_group_offsets({GROUP: None})[GROUP]
assert {tp.partition: meta.offset for tp, meta in offsets.items()} == {
    p: COUNT // PARTITIONS for p in range(PARTITIONS)}, offsets

# A new member resumes from the commits: it reads only what was produced after them.
produce(COUNT, COUNT + 40)
resumed = member()
fresh = []
while len(fresh) < 40:
    check_deadline(f"records after the commits ({len(fresh)} of 40)")
    for records in resumed.poll(timeout_ms=100).values():
        fresh.extend(records)
assert sorted(r.offset for r in fresh if r.partition == 0) == list(range(200, 210)), fresh
resumed.close()

deleted = admin.delete_groups([GROUP])
assert deleted == {GROUP: "OK"}, deleted
assert GROUP not in [g["group_id"] for g in admin.list_groups()], "group still listed"
assert admin.list_group_offsets({GROUP: None})[GROUP] == {}, "offsets survived the deletion"
print("group resumed, described, listed and deleted")
