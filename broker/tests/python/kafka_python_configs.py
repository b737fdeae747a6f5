"""kafka-python's admin client on live administration: IncrementalAlterConfigs and
AlterConfigs on topics and brokers with Kafka's error codes for what they refuse,
DescribeConfigs with sources and synonyms, CreatePartitions (validate_only, growth, refusal
of a decrease) and DescribeTopicPartitions paging through topics with its cursor. Exits
non-zero with a message on any mismatch."""

import sys

from kafka.admin import (ConfigResource, ConfigResourceType, KafkaAdminClient, NewPartitions,
                         NewTopic)

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="python-configs")
admin.create_topics([NewTopic("settings", num_partitions=1, replication_factor=1),
                     NewTopic("pages-a", num_partitions=5, replication_factor=1),
                     NewTopic("pages-b", num_partitions=3, replication_factor=1)])


def topic(name, configs=None):
    return ConfigResource(ConfigResourceType.TOPIC, name, configs=configs)


def broker(name, configs=None):
    return ConfigResource(ConfigResourceType.BROKER, name, configs=configs)


def altered(resources, **options):
    answer = admin.alter_configs(resources, raise_on_unknown=False, **options)
    return {name: outcome for by_name in answer.values() for name, outcome in by_name.items()}


def expect_error(outcome, code):
    assert outcome.startswith(f"[Error {code}]"), outcome


def described(resource, **options):
    answer = admin.describe_configs([resource], config_filter="all", **options)
    return next(iter(next(iter(answer.values())).values()))


# IncrementalAlterConfigs: SET, APPEND to a list from the topic default, then SUBTRACT.
assert altered([topic("settings", {"retention.ms": "600000",
                                   "cleanup.policy": ("APPEND", "compact")})],
               incremental=True) == {"settings": "OK"}
entry = described(topic("settings"), include_synonyms=True)
assert entry["cleanup.policy"]["value"] == "delete,compact", entry["cleanup.policy"]
assert entry["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", entry["retention.ms"]
synonyms = [(s["name"], s["source"]) for s in entry["retention.ms"]["synonyms"]]
assert synonyms[0] == ("retention.ms", "DYNAMIC_TOPIC_CONFIG"), synonyms
assert synonyms[-1] == ("log.retention.hours", "DEFAULT_CONFIG"), synonyms
assert altered([topic("settings", {"cleanup.policy": ("SUBTRACT", "compact"),
                                   "retention.ms": ("DELETE", None)})],
               incremental=True) == {"settings": "OK"}
entry = described(topic("settings"))
assert entry["cleanup.policy"]["value"] == "delete", entry["cleanup.policy"]
assert entry["retention.ms"]["config_source"] == "DEFAULT_CONFIG", entry["retention.ms"]

# Refusals, each with Kafka's code and nothing stored.
for incremental in (True, False):
    outcome = altered([topic("settings", {"segment.bytes": "big"})], incremental=incremental)
    expect_error(outcome["settings"], 40)
    assert "segment.bytes" in outcome["settings"], outcome
    outcome = altered([topic("settings", {"segment.bytez": "4096"})], incremental=incremental)
    expect_error(outcome["settings"], 40)
    assert "segment.bytez" in outcome["settings"], outcome
    expect_error(altered([topic("nowhere", {"segment.bytes": "4096"})],
                         incremental=incremental)["nowhere"], 3)
expect_error(altered([topic("settings", {"segment.bytes": ("APPEND", "1")})],
                     incremental=True)["settings"], 40)
assert described(topic("settings"))["segment.bytes"]["config_source"] == "DEFAULT_CONFIG"

# validate_only checks and changes nothing.
assert altered([topic("settings", {"segment.bytes": "8192"})], incremental=True,
               validate_only=True) == {"settings": "OK"}
assert described(topic("settings"))["segment.bytes"]["config_source"] == "DEFAULT_CONFIG"

# Brokers: a dynamic log default is taken; a static property and a bad value are refused.
brokers = sorted(b["broker_id"] for b in admin.describe_cluster()["brokers"])
first = str(brokers[0])
assert altered([broker(first, {"log.retention.bytes": "1073741824"})],
               incremental=True) == {first: "OK"}
entry = described(broker(first), include_synonyms=True)
assert entry["log.retention.bytes"]["value"] == "1073741824", entry["log.retention.bytes"]
assert entry["log.retention.bytes"]["config_source"] == "DYNAMIC_BROKER_CONFIG"
assert entry["log.retention.bytes"]["read_only"] is False
assert entry["log.dirs"]["read_only"] is True
expect_error(altered([broker(first, {"log.dirs": "/elsewhere"})], incremental=True)[first], 42)
expect_error(altered([broker(first, {"log.segment.bytes": "-5"})], incremental=True)[first], 40)
expect_error(altered([broker(first, {"log.retention.hours": "1"})], incremental=True)[first], 42)

# CreatePartitions: validate_only, then growth, then a decrease refused.
answer = admin.create_partitions({"settings": NewPartitions(4)}, validate_only=True)
assert [r.error_code for r in answer.results] == [0], answer
answer = admin.describe_topic_partitions(["settings"])
assert len(answer["topics"][0]["partitions"]) == 1, answer
admin.create_partitions({"settings": NewPartitions(4)})
answer = admin.describe_topic_partitions(["settings"])
assert [p["partition_index"] for p in answer["topics"][0]["partitions"]] == [0, 1, 2, 3], answer
answer = admin.create_partitions({"settings": NewPartitions(2)}, raise_errors=False)
assert [r.error_code for r in answer.results] == [37], answer

# DescribeTopicPartitions: three partitions a page through pages-a (5) and pages-b (3).
pages = []
cursor = None
while True:
    answer = admin.describe_topic_partitions(["pages-b", "pages-a"], response_partition_limit=3,
                                             cursor=cursor)
    pages.append([(t["name"], [p["partition_index"] for p in t["partitions"]])
                  for t in answer["topics"]])
    cursor = answer["next_cursor"]
    if cursor is None:
        break
    assert len(pages) < 10, pages
assert pages == [[("pages-a", [0, 1, 2])],
                 [("pages-a", [3, 4]), ("pages-b", [0])],
                 [("pages-b", [1, 2])]], pages
answer = admin.describe_topic_partitions(["pages-a", "missing"])
codes = {t["name"]: t["error_code"] for t in answer["topics"]}
assert codes == {"pages-a": 0, "missing": 3}, codes
answer = admin.describe_topic_partitions(["pages-a"], cursor={"topic_name": "pages-b",
                                                              "partition_index": 0})
assert [t["error_code"] for t in answer["topics"]] == [42], answer

admin.close()
print(f"configs altered and described; partitions added; {len(pages)} pages described")
