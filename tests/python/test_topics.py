"""Topic matching: `+` and `#`, `$`-topics, shared subscriptions, overlapping subscriptions,
unsubscribe."""

import collections

import pytest

from mqttclient import prop, props

pytestmark = pytest.mark.timeout(30)


def _received_topics(sub, n_expected, quiet=0.4):
    got = [m.topic for m in sub.expect_messages(n_expected)] if n_expected else []
    sub.expect_no_message(quiet)
    return sorted(got)


def _matches(broker, clients, uid, version, filt, topics):
    sub = clients.subscriber(broker, f"s-{uid}", version, filt, qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    for t in topics:
        pub.publish(t, t.encode(), qos=1)
    return sub


def test_single_level_wildcard_matches_exactly_one_level(broker, clients, version, uid):
    yes = [f"{uid}/a/x/c", f"{uid}/a//c"]
    no = [f"{uid}/a/c", f"{uid}/a/x/y/c", f"{uid}/a/x/c/d", f"{uid}/b/x/c"]
    sub = _matches(broker, clients, uid, version, f"{uid}/a/+/c", no + yes)
    assert _received_topics(sub, 2) == sorted(yes)


def test_trailing_single_level_wildcard(broker, clients, version, uid):
    yes = [f"{uid}/a/x", f"{uid}/a/"]
    no = [f"{uid}/a", f"{uid}/a/x/y"]
    sub = _matches(broker, clients, uid, version, f"{uid}/a/+", no + yes)
    assert _received_topics(sub, 2) == sorted(yes)


def test_multi_level_wildcard_matches_the_parent_and_all_descendants(broker, clients, version, uid):
    yes = [f"{uid}/a", f"{uid}/a/b", f"{uid}/a/b/c", f"{uid}/a/"]
    no = [f"{uid}/ab", f"{uid}/b/a"]
    sub = _matches(broker, clients, uid, version, f"{uid}/a/#", no + yes)
    assert _received_topics(sub, 4) == sorted(yes)


def test_topics_are_case_sensitive_and_match_exactly(broker, clients, version, uid):
    sub = _matches(broker, clients, uid, version, f"{uid}/Room", [f"{uid}/room", f"{uid}/Room ", f"{uid}/Room"])
    assert _received_topics(sub, 1) == [f"{uid}/Room"]


def test_dollar_topics_are_not_matched_by_hash_or_plus_at_the_first_level(broker, clients, version, uid):
    hash_sub = clients.subscriber(broker, f"h-{uid}", version, "#", qos=1)
    plus_sub = clients.subscriber(broker, f"pl-{uid}", version, f"+/{uid}", qos=1)
    explicit = clients.subscriber(broker, f"e-{uid}", version, f"$edge/{uid}", qos=1)
    explicit_plus = clients.subscriber(broker, f"ep-{uid}", version, "$edge/+", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"$edge/{uid}", b"dollar", qos=1)
    assert explicit.expect_message().payload == b"dollar"
    assert explicit_plus.expect_message().payload == b"dollar"
    hash_sub.expect_no_message(0.4)
    plus_sub.expect_no_message(0.1)
    # ...while ordinary topics still match the same wildcards.
    pub.publish(f"x/{uid}", b"plain", qos=1)
    assert hash_sub.expect_message().payload == b"plain"
    assert plus_sub.expect_message().payload == b"plain"


def _shared_members(broker, clients, uid, version, group, n, filt=None):
    members = []
    for i in range(n):
        m = clients.connected(broker, f"{group}{i}-{uid}", version)
        assert m.subscribe(f"$share/{group}/{filt or uid + '/s/+'}", qos=1) == [1]
        members.append(m)
    return members


def _drain(members, quiet=0.5):
    counts = []
    payloads = []
    for m in members:
        got = []
        while True:
            try:
                got.append(m.messages.get(timeout=quiet))
            except Exception:
                break
        counts.append(len(got))
        payloads += [g.payload for g in got]
    return counts, payloads


def test_shared_subscription_delivers_each_message_to_exactly_one_member(broker, clients, version, uid):
    members = _shared_members(broker, clients, uid, version, "g", 3)
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(30):
        pub.publish(f"{uid}/s/x", str(i).encode(), qos=1)
    counts, payloads = _drain(members)
    assert sorted(payloads, key=int) == [str(i).encode() for i in range(30)], "each message exactly once"
    assert sum(1 for c in counts if c > 0) >= 2, f"messages should be spread over members: {counts}"


def test_every_shared_subscription_group_gets_every_message(broker, clients, version, uid):
    g1 = _shared_members(broker, clients, uid, version, "g1", 2)
    g2 = _shared_members(broker, clients, uid, version, "g2", 2)
    plain = clients.subscriber(broker, f"plain-{uid}", version, f"{uid}/s/+", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(10):
        pub.publish(f"{uid}/s/x", str(i).encode(), qos=1)
    _, p1 = _drain(g1)
    _, p2 = _drain(g2)
    _, p3 = _drain([plain])
    expected = [str(i).encode() for i in range(10)]
    assert sorted(p1, key=int) == expected
    assert sorted(p2, key=int) == expected
    assert p3 == expected


def test_shared_subscription_message_goes_to_remaining_member_after_one_leaves(broker, clients, version, uid):
    a, b = _shared_members(broker, clients, uid, version, "g", 2)
    a.unsubscribe(f"$share/g/{uid}/s/+")
    pub = clients.connected(broker, f"p-{uid}", version)
    for i in range(5):
        pub.publish(f"{uid}/s/x", str(i).encode(), qos=1)
    assert [m.payload for m in b.expect_messages(5)] == [str(i).encode() for i in range(5)]
    a.expect_no_message(0.3)


@pytest.mark.mosquitto_deviation("2.0.11 sends one copy per matching subscription (allowed by the spec, not by our requirements)")
def test_overlapping_subscriptions_deliver_one_copy_at_the_highest_qos(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/#", qos=0)
    sub.subscribe(f"{uid}/a/+", qos=2)
    sub.subscribe(f"{uid}/a/b", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/a/b", b"once", qos=2)
    m = sub.expect_message()
    assert (m.payload, m.qos) == (b"once", 2)
    sub.expect_no_message(0.5)


@pytest.mark.mosquitto_deviation("2.0.11 sends one copy per matching subscription, each with its own identifier")
def test_v5_overlapping_subscriptions_list_all_matching_subscription_identifiers(broker, clients, uid):
    sub = clients.subscriber(broker, f"s-{uid}", 5, f"{uid}/#", qos=1, properties=props("SUBSCRIBE", SubscriptionIdentifier=11))
    sub.subscribe(f"{uid}/a/+", qos=1, properties=props("SUBSCRIBE", SubscriptionIdentifier=22))
    sub.subscribe(f"{uid}/zzz", qos=1, properties=props("SUBSCRIBE", SubscriptionIdentifier=33))
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/a/b", b"ids", qos=1)
    m = sub.expect_message()
    assert sorted(prop(m.properties, "SubscriptionIdentifier", [])) == [11, 22]
    sub.expect_no_message(0.5)


def test_v5_subscription_identifier_is_sent_with_matching_messages(broker, clients, uid):
    sub = clients.subscriber(broker, f"s-{uid}", 5, f"{uid}/a", qos=1, properties=props("SUBSCRIBE", SubscriptionIdentifier=268435455))
    sub.subscribe(f"{uid}/b", qos=1)  # no identifier
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/a", b"a", qos=1)
    pub.publish(f"{uid}/b", b"b", qos=1)
    ma, mb = sub.expect_messages(2)
    assert prop(ma.properties, "SubscriptionIdentifier") == [268435455]
    assert prop(mb.properties, "SubscriptionIdentifier") is None


def test_unsubscribe_stops_delivery(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/t", qos=1)
    sub.subscribe(f"{uid}/keep", qos=1)
    sub.unsubscribe(f"{uid}/t")
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/t", b"gone", qos=1)
    pub.publish(f"{uid}/keep", b"kept", qos=1)
    assert sub.expect_message().payload == b"kept"
    sub.expect_no_message(0.3)


def test_unsubscribe_filter_must_match_the_subscription_literally(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/+", qos=1)
    sub.unsubscribe(f"{uid}/x")  # not the same filter: the wildcard subscription stays
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/x", b"still", qos=1)
    assert sub.expect_message().payload == b"still"


def test_v5_unsuback_reason_codes_report_success_and_no_subscription_existed(broker, clients, uid):
    sub = clients.subscriber(broker, f"s-{uid}", 5, f"{uid}/a", qos=1)
    codes = sub.unsubscribe([f"{uid}/a", f"{uid}/never"])
    assert codes == [0x00, 0x11]


def test_v311_unsubscribe_of_unknown_filter_is_still_acknowledged(broker, clients, uid):
    sub = clients.connected(broker, f"s-{uid}", 4)
    sub.unsubscribe(f"{uid}/never")  # waits for UNSUBACK


def test_subscribing_again_replaces_the_subscription_qos(broker, clients, version, uid):
    sub = clients.subscriber(broker, f"s-{uid}", version, f"{uid}/t", qos=2)
    sub.subscribe(f"{uid}/t", qos=0)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/t", b"x", qos=2)
    m = sub.expect_message()
    assert m.qos == 0
    sub.expect_no_message(0.3)


def test_suback_grants_the_requested_qos_for_each_filter(broker, clients, version, uid):
    sub = clients.connected(broker, f"s-{uid}", version)
    if version == 5:
        from paho.mqtt.subscribeoptions import SubscribeOptions
        filters = [(f"{uid}/{q}", SubscribeOptions(qos=q)) for q in (0, 1, 2)]
    else:
        filters = [(f"{uid}/{q}", q) for q in (0, 1, 2)]
    assert sub.subscribe(filters) == [0, 1, 2]


def test_v5_client_with_shared_and_plain_subscription_gets_one_copy_for_each(broker, clients, uid):
    """MQTT 5 section 4.8.2: a copy by virtue of the non-shared subscription, and the group's copy
    (its only member), never more."""
    version = 5
    m = clients.subscriber(broker, f"m-{uid}", version, f"$share/g/{uid}/t", qos=1)
    m.subscribe(f"{uid}/t", qos=1)
    pub = clients.connected(broker, f"p-{uid}", version)
    pub.publish(f"{uid}/t", b"two", qos=1)
    got = [x.payload for x in m.expect_messages(2)]
    assert got == [b"two", b"two"]
    m.expect_no_message(0.3)


@pytest.mark.mosquitto_deviation("2.0.11 sends retained messages to a new shared subscription (MQTT 5 3.3.1.3: only non-shared subscriptions get them)")
def test_v5_retained_messages_are_not_sent_to_a_new_shared_subscription(broker, clients, uid):
    pub = clients.connected(broker, f"p-{uid}", 5)
    pub.publish(f"{uid}/s/x", b"retained", qos=1, retain=True)
    m = clients.subscriber(broker, f"m-{uid}", 5, f"$share/g/{uid}/s/+", qos=1)
    m.expect_no_message(0.5)  # MQTT 5 3.3.1.3: retained messages go to new non-shared subscriptions
    pub.publish(f"{uid}/s/x", b"live", qos=1)
    assert m.expect_message().payload == b"live"


def test_v5_shared_subscription_unsubscribe_reports_success(broker, clients, uid):
    m = clients.subscriber(broker, f"m-{uid}", 5, f"$share/g/{uid}/t", qos=1)
    assert m.unsubscribe([f"$share/g/{uid}/t", f"$share/other/{uid}/t"]) == [0x00, 0x11]
