async def test_created_then_read(api):
    results = await api.post_events(
        [
            api.event(
                "conversation.created",
                "c1",
                "2026-11-24T10:00:00Z",
                channel="call",
                contact="+34911000101",
                customer={"name": "Ann"},
            ),
        ]
    )
    assert [r["outcome"] for r in results] == ["applied"]
    detail = await api.conversation("c1")
    assert detail["conversation"]["status"] == "new"
    assert detail["conversation"]["created_time"] == "11:00:00"
