"""/healthz: 200 with every check ok, 503 naming what is down."""

from datetime import timedelta

import pytest
from django.utils import timezone

from qontohub.models import Heartbeat
from qontohub.tasks import heartbeat

pytestmark = pytest.mark.django_db


def test_healthy_after_a_heartbeat(client):
    heartbeat()
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {k: v["status"] for k, v in body["checks"].items()} == {
        "database": "ok",
        "broker": "ok",
        "scheduler": "ok",
    }


def test_no_heartbeat_means_the_cluster_is_not_running(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert "cluster" in response.json()["checks"]["scheduler"]["error"]


def test_a_stale_heartbeat_is_reported(client):
    Heartbeat.objects.create(name="scheduler", beat_at=timezone.now() - timedelta(minutes=10))
    body = client.get("/healthz").json()
    assert body["checks"]["scheduler"]["status"] == "down"
    assert "stopped" in body["checks"]["scheduler"]["error"]


def test_a_broken_broker_is_reported(client, monkeypatch):
    heartbeat()

    def broken():
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr("django_q.brokers.get_broker", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["broker"]["status"] == "down"


def test_the_scheduled_heartbeat_runs_through_the_queue(client):
    from django_q.tasks import async_task

    async_task("qontohub.tasks.heartbeat")  # runs inline in tests (Conf.SYNC)
    assert Heartbeat.objects.filter(name="scheduler").exists()
