"""Preference-loss goldens in plain torch: DPO (XTuner v0.1.22's loss types), ORPO's odds-ratio term and the reward
model's ranking / focal loss with the log-barrier / L2 penalty, each with its gradient by autograd, in float64.

Writes tests/fixtures/pref/golden.json; PreferenceGoldenTests compares PreferenceLoss against it. The formulas are
written from XTuner's dpo.py / orpo.py / reward.py (mean over pairs, as mmengine reduces the per-pair loss).

    python3 tools/golden/make_pref_golden.py --out tests/fixtures/pref/golden.json
"""
import argparse
import json

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def dpo(loss_type, beta, eps, pc, pr, rc, rr):
    logits = (pc - pr) - (rc - rr)
    if loss_type == 'sigmoid':
        loss = -F.logsigmoid(beta * logits) * (1 - eps) - F.logsigmoid(-beta * logits) * eps
    elif loss_type == 'robust':
        loss = (-F.logsigmoid(beta * logits) * (1 - eps) + F.logsigmoid(-beta * logits) * eps) / (1 - 2 * eps)
    elif loss_type == 'hinge':
        loss = torch.relu(1 - beta * logits)
    elif loss_type == 'ipo':
        loss = (logits - 1 / (2 * beta)) ** 2
    elif loss_type == 'kto_pair':
        chosen_kl = (pc - rc).mean().clamp(min=0)
        rejected_kl = (pr - rr).mean().clamp(min=0)
        loss = torch.cat((1 - torch.sigmoid(beta * ((pc - rc) - rejected_kl)), 1 - torch.sigmoid(beta * (chosen_kl - (pr - rr)))), 0)
    elif loss_type == 'sppo_hard':
        loss = ((pc - rc) - 0.5 / beta) ** 2 + ((pr - rr) + 0.5 / beta) ** 2
    elif loss_type == 'nca_pair':
        cr, rj = (pc - rc) * beta, (pr - rr) * beta
        loss = -F.logsigmoid(cr) - 0.5 * F.logsigmoid(-cr) - 0.5 * F.logsigmoid(-rj)
    else:
        raise ValueError(loss_type)
    return loss.mean()


def orpo(beta, c, r):
    log_odds = (c - r) - (torch.log1p(-torch.exp(c)) - torch.log1p(-torch.exp(r)))
    ratio = F.logsigmoid(log_odds)
    ratio = ratio[~torch.isnan(ratio)]
    return -(beta * ratio).mean()


def reward(loss_type, penalty, weight, c, r):
    n = c.numel()
    rank = -F.logsigmoid(c - r)
    if loss_type == 'focal':
        p = 2 * torch.relu(torch.sigmoid(c - r) - 0.5)
        rank = (1 - p) ** 2 * rank
    loss = rank.sum() / n
    s = torch.cat([c, r])
    if penalty == 'log_barrier':
        x = torch.clamp(s, -5 + 1e-3, 5 - 1e-3)
        loss = loss + weight * (-torch.log(5 - x) - torch.log(x + 5)).sum() / n
    elif penalty == 'L2':
        loss = loss + weight * (s ** 2).sum() / n
    return loss


def case(kind, params, fn, n, gen):
    pc = (-0.5 - 3.5 * torch.rand(n, generator=gen)).requires_grad_()
    pr = (-0.5 - 3.5 * torch.rand(n, generator=gen)).requires_grad_()
    rc = -0.5 - 3.5 * torch.rand(n, generator=gen)
    rr = -0.5 - 3.5 * torch.rand(n, generator=gen)
    loss = fn(pc, pr, rc, rr)
    loss.backward()
    return dict(kind=kind, params=params, chosen=pc.tolist(), rejected=pr.tolist(), ref_chosen=rc.tolist(), ref_rejected=rr.tolist(),
                loss=loss.item(), d_chosen=pc.grad.tolist(), d_rejected=pr.grad.tolist())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    cases = []
    for lt in ['sigmoid', 'robust', 'hinge', 'ipo', 'kto_pair', 'sppo_hard', 'nca_pair']:
        for beta, eps in [(0.1, 0.0), (0.5, 0.2)]:
            cases.append(case('dpo', dict(loss_type=lt, beta=beta, label_smoothing=eps),
                              lambda pc, pr, rc, rr: dpo(lt, beta, eps, pc, pr, rc, rr), 3, gen))
    for beta in [0.1, 0.5]:
        cases.append(case('orpo', dict(beta=beta), lambda pc, pr, rc, rr: orpo(beta, pc, pr), 3, gen))
    for lt in ['ranking', 'focal']:
        for pen in ['none', 'log_barrier', 'L2']:
            cases.append(case('reward', dict(loss_type=lt, penalty_type=pen, penalty_weight=0.05),
                              lambda pc, pr, rc, rr: reward(lt, pen, 0.05, pc, pr), 3, gen))
    import os
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(dict(torch=torch.__version__, cases=cases), f, indent=1)
    print(f'{len(cases)} cases -> {args.out}')


if __name__ == '__main__':
    main()
