"""kafka-python's consumer on 100 partitions uses incremental fetch sessions (KIP-227): each
broker (shard) it fetches from gives it a non-zero session id, its incremental requests
carry only the partitions whose position moved, and the answers leave out the partitions
with nothing new, while every record still arrives exactly once. Exits non-zero with a
message on any mismatch."""

import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.consumer.fetcher import FetchSessionHandler

bootstrap = sys.argv[1]
TOPIC = "sessions"
PARTITIONS = 100
PER_PARTITION = 10

admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="python-sessions")
admin.create_topics([NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1)])
admin.close()


def produce(partitions, start):
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for partition in partitions:
        for i in range(PER_PARTITION):
            producer.send(TOPIC, value=f"{partition}-{start + i}".encode(), partition=partition)
    producer.flush()
    producer.close()


produce(range(PARTITIONS), 0)

# Watch the client's session bookkeeping: what each answer held, against its session's size.
seen_sessions = set()
answers = []  # (incremental, partitions answered, partitions in the session)
requests = []  # (incremental, partitions sent, partitions in the session)
refused = []  # answers the client's session bookkeeping found inconsistent
original_handle = FetchSessionHandler.handle_response
original_build = FetchSessionHandler.build_next


def handle_response(self, response):
    incremental = not self.next_metadata.is_full
    answered = sum(len(topic.partitions) for topic in response.responses)
    answers.append((incremental, answered, len(self.session_partitions)))
    if response.session_id:
        seen_sessions.add(response.session_id)
    elif incremental:
        refused.append(("incremental answer without its session", response.error_code))
    accepted = original_handle(self, response)
    if not accepted:
        refused.append((incremental, answered, response.error_code))
    return accepted


def build_next(self, next_partitions):
    data = original_build(self, next_partitions)
    sent = sum(len(topic.partitions) for topic in data.to_send)
    requests.append((not data.metadata.is_full, sent, len(next_partitions)))
    return data


FetchSessionHandler.handle_response = handle_response
FetchSessionHandler.build_next = build_next

consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=100)
consumer.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
received = []


def read(count, limit_s=60):
    deadline = time.time() + limit_s
    while len(received) < count:
        assert time.time() < deadline, f"read {len(received)} of {count}"
        for records in consumer.poll(timeout_ms=200).values():
            received.extend(record.value.decode() for record in records)


read(PARTITIONS * PER_PARTITION)
# Caught up: a few more fetches, with nothing new anywhere.
quiet_from = len(answers)
deadline = time.time() + 30
while len(answers) < quiet_from + 6:
    assert time.time() < deadline, answers[quiet_from:]
    assert not consumer.poll(timeout_ms=200), "no records were produced"
# News on one partition only.
produce([7], PER_PARTITION)
news_from = len(answers)
read(PARTITIONS * PER_PARTITION + PER_PARTITION)
consumer.close()

assert len(received) == len(set(received)) == PARTITIONS * PER_PARTITION + PER_PARTITION, \
    len(received)
assert seen_sessions, answers
# kafka-python checks every incremental answer against its session (no partition it does not
# hold, the session id it was given); an answer it refuses makes it start over.
assert not refused, refused
incremental = [answer for answer in answers if answer[0]]
assert incremental, answers
quiet = [answer for answer in answers[quiet_from:news_from] if answer[0]]
# Caught up, the answers leave out what did not change (a partition that joins the session
# late, once the client knows its position, is answered once when it joins).
assert quiet and all(answered < size for _, answered, size in quiet), quiet
assert any(answered == 0 and size > 0 for _, answered, size in quiet), quiet
news = [answer for answer in answers[news_from:] if answer[0] and answer[1] > 0]
assert news and all(answered <= 2 < size for _, answered, size in news), answers[news_from:]
sent = [request for request in requests if request[0]]
# While caught up, an incremental request sends no partition at all.
assert any(count == 0 and size > 0 for _, count, size in sent), sent
print(f"{len(seen_sessions)} fetch sessions; {len(incremental)} incremental answers, "
      f"{len(quiet)} of them empty while caught up")
