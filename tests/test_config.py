"""The configuration table: one definition of every field, the same rules for flags, flagfiles and code."""

import dataclasses
import os
import subprocess
import sys

from absl import flags
import pytest

from gan_dist import config as config_lib
from gan_dist import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flags_and_code_get_the_same_defaults_help_and_names():
  fv = flags.FlagValues()
  config_lib.define_flags(fv)
  fv(["gan_dist"])
  assert config_lib.from_flag_values(fv) == config_lib.Config() == config_lib.make_config()
  for field in config_lib.FIELDS:
    assert fv[field.name].help.endswith(field.metadata["help"]), field.name  # Enums prefix their choices.
  assert len(set(config_lib.NAMES)) == len(config_lib.NAMES) == len(dataclasses.fields(config_lib.Config))


@pytest.mark.parametrize("values,message,as_flag", [
    (dict(batch_size=0), "--batch_size=0: must be >= 1", "--batch_size=0"),
    (dict(ema_decay=1.0), "--ema_decay=1.0: must be in [0, 1)", "--ema_decay=1.0"),
    (dict(loss="wgan"), "--loss='wgan': must be one of non_saturating, minimax", "--loss=wgan"),
    (dict(channels=2), "--channels=2: must be one of 0, 1, 3", "--channels=2"),
    (dict(beta1=1.5), "--beta1=1.5: must be <= 1.0", "--beta1=1.5"),
    (dict(latent_dim=2.5), "--latent_dim=2.5: must be an integer", "--latent_dim=2.5"),
    (dict(deterministic="yes"), "--deterministic='yes': must be true or false", None),
    # NaN passes every bound (NaN < 0 is false): a run with --truncation=nan drew black images and exited 0.
    (dict(truncation=float("nan")), "--truncation=nan: must be a finite number", "--truncation=nan"),
    (dict(g_lr=float("inf")), "--g_lr=inf: must be a finite number", "--g_lr=inf"),
    (dict(ada_target=float("nan")), "--ada_target=nan: must be a finite number", "--ada_target=nan"),
    (dict(bogus=1), "unknown config fields ['bogus']", "--bogus=1"),
])
def test_code_is_refused_what_the_flags_refuse(values, message, as_flag):
  with pytest.raises(errors.UserError) as raised:
    config_lib.make_config(**values)
  assert message in str(raised.value)
  if as_flag:  # The same value on the command line is refused too, naming that flag.
    with pytest.raises(errors.UserError) as raised:
      config_lib.from_args([as_flag])
    name = as_flag.split("=")[0]
    assert f"{as_flag}:" in str(raised.value) or f"flag '{name[2:]}'" in str(raised.value), str(raised.value)


def test_replace_validates_and_integers_are_accepted_for_floats():
  cfg = config_lib.make_config(g_lr=1, ema_decay=0)
  assert isinstance(cfg.g_lr, float) and cfg.g_lr == 1.0
  assert cfg.replace(batch_size=32).batch_size == 32
  with pytest.raises(errors.UserError, match="--batch_size=-1"):
    cfg.replace(batch_size=-1)


def test_from_args_reads_flagfiles_and_the_last_value_wins(tmp_path):
  path = tmp_path / "x.cfg"
  path.write_text("# A comment.\n--arch=mlp\n--batch_size=64\n--nosync_batchnorm\n")
  cfg = config_lib.from_args([f"--flagfile={path}", "--batch_size=32"])
  assert (cfg.arch, cfg.batch_size, cfg.sync_batchnorm) == ("mlp", 32, False)
  with pytest.raises(errors.UserError, match="unexpected argument 'stray'"):
    config_lib.from_args(["stray"])


def test_flagfile_text_roundtrip_keeps_every_field():
  cfg = config_lib.make_config(arch="dcgan", batch_size=32, sync_batchnorm=False, g_lr=3e-4, workdir="gs://b/run",
                               profile_steps="2,3", ema_decay=0.999, deterministic=True)
  text = config_lib.to_flagfile(cfg)
  assert len(text.splitlines()) == len(config_lib.NAMES)
  assert config_lib.from_flagfile(text) == cfg
  assert config_lib.from_flagfile(text, workdir="elsewhere") == cfg.replace(workdir="elsewhere")


def test_an_old_workdirs_unknown_field_is_skipped_with_a_warning(caplog):
  cfg = config_lib.from_flagfile("--arch=mlp\n--field_of_another_version=3\n--nofield_gone\n")
  assert cfg.arch == "mlp"
  assert any("field_of_another_version" in r.getMessage() for r in caplog.records)


def test_resume_compatibility_rules():
  saved = config_lib.make_config(ema_decay=0.999)
  assert config_lib.check_resume_compatible(saved, saved.replace(ema_decay=0.99)) is None  # Both have an EMA.
  assert config_lib.check_resume_compatible(saved, saved.replace(g_lr=1.0, train_steps=7)) is None
  message = config_lib.check_resume_compatible(saved, saved.replace(ema_decay=0.0, arch="mlp"))
  assert "--ema_decay" in message and "--arch" in message
  # A class head (any weight > 0) is part of D's checkpoint; its weight alone is not.
  with_head = saved.replace(class_loss_weight=1.0)
  assert config_lib.check_resume_compatible(with_head, with_head.replace(class_loss_weight=0.5)) is None
  assert "--class_loss_weight (workdir has 1.0" in config_lib.check_resume_compatible(with_head, saved)
  # The data position: refused unless the change is meant.
  # --seed and --shuffle_files: the data order is a function of (seed, step), so they decide it as much.
  for change in (dict(batch_size=64), dict(d_steps_per_g=2), dict(dataset="fashion_mnist"), dict(split="test"),
                 dict(class_filter=3), dict(seed=5), dict(shuffle_files=False)):
    message = config_lib.check_resume_compatible(saved, saved.replace(**change))
    assert message is not None and f"--{next(iter(change))}" in message and "--allow_data_position_change" in message
    assert config_lib.check_resume_compatible(saved, saved.replace(allow_data_position_change=True, **change)) is None
  # Moved data, or a folder's pack (it trains exactly as the folder), changes nothing.
  assert config_lib.check_resume_compatible(saved, saved.replace(data_dir="/elsewhere")) is None
  folder = saved.replace(dataset="folder")
  assert config_lib.check_resume_compatible(folder, folder.replace(dataset="packed")) is None


def test_the_config_module_does_not_import_tensorflow():
  code = "import sys, gan_dist.config; print('tensorflow' in sys.modules)"
  out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=REPO))
  assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr[-2000:]
