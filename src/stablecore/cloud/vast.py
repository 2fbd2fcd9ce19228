"""vast.ai through its REST API (https://console.vast.ai/api/v0): register our public key,
find the cheapest offer of a GPU at or below the cap, rent it as an SSH instance, read its
SSH address, destroy it."""

from __future__ import annotations

import time
from typing import Any

from stablecore.cloud import Api, CloudError, Instance, PriceTooHigh

IMAGE = "pytorch/pytorch:2.4.0-cuda12.4-cudnn9-runtime"


class Vast(Api):
    name = "vast"

    def __init__(self, key: str, base_url: str = "https://console.vast.ai/api/v0") -> None:
        super().__init__(key, base_url)

    def up(self, name: str, gpu: str, count: int, max_price: float, public_key: str,
           disk_gb: int = 60, image: str = IMAGE) -> Instance:
        # 1. our key on the account: vast puts the account's keys into new instances
        keys = self.call("GET", "/ssh/")
        have = keys if isinstance(keys, list) else keys.get("keys", [])
        if not any(k.get("public_key", k.get("ssh_key", "")).split()[:2]
                   == public_key.split()[:2] for k in have):
            self.call("POST", "/ssh/", json={"ssh_key": public_key})
        # 2. the cheapest rentable offer
        query = {"gpu_name": {"eq": gpu}, "num_gpus": {"eq": count}, "rentable": {"eq": True},
                 "disk_space": {"gte": disk_gb}, "type": "on-demand",
                 "order": [["dph_total", "asc"]], "limit": 1}
        offers = self.call("POST", "/bundles/", json=query).get("offers", [])
        if not offers:
            raise CloudError(f"vast: no rentable offer of {count} x {gpu} now")
        offer = offers[0]
        if float(offer["dph_total"]) > max_price:
            raise PriceTooHigh(f"vast: the cheapest {count} x {gpu} costs "
                               f"${float(offer['dph_total']):.2f}/h, above your cap of "
                               f"${max_price:.2f}/h; nothing was rented")
        # 3. rent it
        made = self.call("PUT", f"/asks/{offer['id']}/", json={
            "client_id": "me", "image": image, "disk": disk_gb, "label": name,
            "runtype": "ssh"})
        if not made.get("success"):
            raise CloudError(f"vast: renting offer {offer['id']} failed: {made}")
        return self.get(str(made["new_contract"]))

    def wait_ready(self, instance_id: str, timeout: float = 600) -> Instance:
        deadline = time.monotonic() + timeout
        while True:
            instance = self.get(instance_id)
            if instance.state == "running" and instance.ssh_host and instance.ssh_port:
                return instance
            if time.monotonic() > deadline:
                raise CloudError(f"vast: instance {instance_id} not reachable over SSH after "
                                 f"{timeout:g} s (state {instance.state})")
            time.sleep(2)

    def get(self, instance_id: str) -> Instance:
        return self._instance(self.call("GET", f"/instances/{instance_id}/")["instances"])

    def list(self) -> list[Instance]:
        return [self._instance(i) for i in self.call("GET", "/instances/")["instances"]]

    def down(self, instance_id: str) -> None:
        self.call("DELETE", f"/instances/{instance_id}/")

    def _instance(self, data: dict[str, Any]) -> Instance:
        host, port = data.get("ssh_host") or "", int(data.get("ssh_port") or 0)
        direct = (data.get("ports") or {}).get("22/tcp") or []
        if data.get("public_ipaddr") and direct:  # a direct port beats vast's SSH proxy
            host, port = data["public_ipaddr"].strip(), int(direct[0]["HostPort"])
        return Instance("vast", str(data["id"]), data.get("label") or "",
                        data.get("actual_status") or "", float(data.get("dph_total") or 0),
                        data.get("gpu_name") or "", int(data.get("num_gpus") or 0), host, port)
