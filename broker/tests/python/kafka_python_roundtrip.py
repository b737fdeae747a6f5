"""kafka-python (an independent client implementation) against the broker: create a topic,
produce with its default (idempotent) producer keyed records with headers to several partitions in each codec, read them back, and
check content, order per partition and offsets. Exits non-zero with a message on any mismatch."""

import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, KafkaAdminClient, NewTopic

bootstrap = sys.argv[1]
PARTITIONS = 3
COUNT = 600

admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="python-roundtrip")
for codec in ("none", "gzip"):
    topic = f"python-{codec}"
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1,
                                  topic_configs={"retention.ms": "3600000"})])
    described = admin.describe_configs([ConfigResource("TOPIC", topic)])
    assert described["topic"][topic]["retention.ms"]["value"] == "3600000", described

    # kafka-python 3's default producer: idempotent (InitProducerId, sequence numbers).
    producer = KafkaProducer(bootstrap_servers=bootstrap,
                             compression_type=None if codec == "none" else codec)
    assert producer.config["enable_idempotence"], "kafka-python 3 defaults to idempotence"

    futures = [
        producer.send(topic, key=b"key-%d" % i, value=b"value-%d" % i, partition=i % PARTITIONS,
                      headers=[("trace", b"t-%d" % i)], timestamp_ms=1_700_000_000_000 + i)
        for i in range(COUNT)
    ]
    producer.flush()
    acked = [future.get(timeout=10) for future in futures]
    producer.close()
    for i, metadata in enumerate(acked):
        assert metadata.partition == i % PARTITIONS and metadata.offset == i // PARTITIONS, (i, metadata)

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    seen = []
    for message in consumer:
        seen.append(message)
        if len(seen) == COUNT:
            break
    consumer.close()
    assert len(seen) == COUNT, f"{codec}: consumed {len(seen)} of {COUNT}"
    for message in seen:
        i = message.partition + PARTITIONS * message.offset
        assert message.key == b"key-%d" % i, message
        assert message.value == b"value-%d" % i, message
        assert message.headers == [("trace", b"t-%d" % i)], message
        assert message.timestamp == 1_700_000_000_000 + i, message
    print(f"{codec}: {COUNT} records round-tripped")
admin.close()
