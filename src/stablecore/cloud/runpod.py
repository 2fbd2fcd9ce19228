"""RunPod through its REST API (https://rest.runpod.io/v1): create a pod with port 22/tcp
public and `PUBLIC_KEY` set (RunPod's images add it to root's authorized_keys), read its
public IP and mapped SSH port, delete it."""

from __future__ import annotations

import re
import time
from typing import Any

from stablecore.cloud import Api, CloudError, Instance, PriceTooHigh

IMAGE = "runpod/pytorch:2.4.0-py3.11-cuda12.4.1-devel-ubuntu22.04"


def gpu_type_id(gpu: str) -> str:
    """RunPod's id for a GPU: "RTX 4090" -> "NVIDIA GeForce RTX 4090"; ids pass as they are."""
    if gpu.startswith(("NVIDIA", "AMD")):
        return gpu
    return ("NVIDIA GeForce " if re.match(r"RTX \d{4}", gpu) else "NVIDIA ") + gpu


class RunPod(Api):
    name = "runpod"

    def __init__(self, key: str, base_url: str = "https://rest.runpod.io/v1") -> None:
        super().__init__(key, base_url)

    def up(self, name: str, gpu: str, count: int, max_price: float, public_key: str,
           disk_gb: int = 60, image: str = IMAGE) -> Instance:
        pod = self.call("POST", "/pods", json={
            "name": name, "imageName": image, "gpuTypeIds": [gpu_type_id(gpu)],
            "gpuCount": count, "containerDiskInGb": disk_gb, "ports": ["22/tcp"],
            "supportPublicIp": True, "env": {"PUBLIC_KEY": public_key}})
        instance = self._instance(pod)
        if instance.price_per_hour > max_price:
            self.down(instance.id)
            raise PriceTooHigh(f"runpod: {gpu} x{count} costs ${instance.price_per_hour:.2f}/h,"
                               f" above your cap of ${max_price:.2f}/h; the pod was deleted "
                               "at once")
        return instance

    def wait_ready(self, instance_id: str, timeout: float = 600) -> Instance:
        deadline = time.monotonic() + timeout
        while True:
            instance = self.get(instance_id)
            if instance.state == "RUNNING" and instance.ssh_host and instance.ssh_port:
                return instance
            if time.monotonic() > deadline:
                raise CloudError(f"runpod: pod {instance_id} not reachable over SSH after "
                                 f"{timeout:g} s (state {instance.state})")
            time.sleep(2)

    def get(self, instance_id: str) -> Instance:
        return self._instance(self.call("GET", f"/pods/{instance_id}"))

    def list(self) -> list[Instance]:
        return [self._instance(p) for p in self.call("GET", "/pods")]

    def down(self, instance_id: str) -> None:
        self.call("DELETE", f"/pods/{instance_id}")

    def _instance(self, pod: dict[str, Any]) -> Instance:
        ports = pod.get("portMappings") or {}
        gpu = pod.get("gpu") or {}
        return Instance("runpod", pod["id"], pod.get("name") or "",
                        pod.get("desiredStatus", ""), float(pod.get("costPerHr") or 0),
                        gpu.get("displayName") or gpu.get("id", ""), int(gpu.get("count") or 0),
                        pod.get("publicIp") or "", int(ports.get("22") or 0))
