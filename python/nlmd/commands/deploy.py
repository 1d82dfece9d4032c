"""`nlmd deploy`: SevenNet checkpoint -> verified potential directory."""

from pathlib import Path

import click


@click.command("deploy")
@click.argument("model", default="7net-0")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Potential directory to write (default: potentials/<model name>).")
@click.option("--parallel/--no-parallel", default=True, show_default=True,
              help="Also write the per-layer deployment for pair_style e3gnn/parallel.")
@click.option("--aot/--no-aot", default=True, show_default=True,
              help="Also compile the serial model ahead of time with AOTInductor (deployed_serial.pt2, a few "
                   "minutes; pair_style e3gnn then runs ~1.5-2x faster on CPU). The code is specific to this "
                   "kind of CPU: deploy on the nodes that run the MD.")
@click.option("--aot-layers/--no-aot-layers", default=True, show_default=True,
              help="With --aot and --parallel, also compile every layer of the parallel model "
                   "(deployed_parallel/layer_*.pt2, minutes more): pair_style e3gnn/parallel then runs them.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Device the compiled package (--aot) runs on; it is compiled there. auto: cuda when torch "
                   "has a GPU. The TorchScript files run on either.")
@click.option("--force", is_flag=True, help="Replace the output directory if it exists.")
@click.option("--no-verify", is_flag=True, help="Skip the LAMMPS vs SevenNetCalculator check (not recommended).")
@click.option("--trust-checkpoint", is_flag=True,
              help="Load a checkpoint that holds more than tensors, numbers and numpy arrays. A .pth file is a "
                   "pickle and such a one can run code when loaded: only for files whose origin you trust.")
def command(model: str, output: Path | None, parallel: bool, aot: bool, aot_layers: bool, device: str, force: bool,
            no_verify: bool, trust_checkpoint: bool) -> None:
    """Deploy MODEL (a SevenNet .pth checkpoint or a pretrained name shipped with sevenn, default 7net-0).

    Writes deployed_serial.pt, deployed_serial.pt2 (with --aot), deployed_parallel/ (with its compiled
    layers: --aot-layers), manifest.json and
    pair.lmp, then checks forces of a probe structure through LAMMPS against SevenNetCalculator (fails
    above 1e-4 eV/A).
    """
    from nlmd.deploy import deploy

    deploy(model, output, parallel=parallel, aot=aot, aot_layers=aot_layers, device=device, force=force, verify=not no_verify,
           trust_checkpoint=trust_checkpoint, echo=click.echo)
