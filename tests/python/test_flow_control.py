"""Flow control: a publisher faster than an online subscriber is slowed down, not answered by
dropping acknowledged QoS 1 messages once the subscriber's queue bound is reached."""

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

pytestmark = [pytest.mark.robustmq_only, pytest.mark.timeout(60)]


def test_fast_publisher_to_slow_online_subscriber_loses_nothing(broker_factory, clients, uid):
    b = broker_factory(limits={"max_queued_messages": 50})
    sub = clients(b, f"s-{uid}", 5)
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 1  # one message in flight: delivery is much slower than publishing
    sub.connect(properties=props)
    sub.subscribe(f"{uid}/t", qos=1)
    pub = clients(b, f"p-{uid}", 5)
    pub.c.max_inflight_messages_set(100)
    pub.connect()
    n = 1000
    infos = [pub.c.publish(f"{uid}/t", str(i).encode(), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(timeout=30)
        assert info.is_published()
    got = [int(m.payload) for m in sub.expect_messages(n, timeout=30)]
    assert got == list(range(n))
