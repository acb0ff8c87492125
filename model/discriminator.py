"""The s4GAN image-level discriminator (the paper's Sec. 3.1; docs/original.md, "Discriminator").

What it is shown (class maps (+) the scaled image) is part of the objective: methods/s4gan.py."""
import torch
import torch.nn.functional as F
from torch import nn


class S4GANDiscriminator(nn.Module):
    """Input: class-probability maps (+) the image scaled to [0, 1]; output (probability, features).

    Four 4x4 stride-2 convs (64-128-256-512) with LeakyReLU(0.2), Dropout2d(0.5) after the first
    three, average pooling to 1x1, Linear(512, 1) and a sigmoid. The original pooled with a fixed
    kernel (20x20 for 321 crops, 16x32 for 256x512) that covers the whole map at the default crops;
    global average pooling computes the same numbers there and also works at any other crop size.
    """

    def __init__(self, num_classes, ndf=64):
        super().__init__()
        self.conv1 = nn.Conv2d(num_classes + 3, ndf, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(ndf, ndf * 2, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(ndf * 2, ndf * 4, 4, stride=2, padding=1)
        self.conv4 = nn.Conv2d(ndf * 4, ndf * 8, 4, stride=2, padding=1)
        self.fc = nn.Linear(ndf * 8, 1)
        self.drop = nn.Dropout2d(0.5)
        self.leaky_relu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x):
        x = self.drop(self.leaky_relu(self.conv1(x)))
        x = self.drop(self.leaky_relu(self.conv2(x)))
        x = self.drop(self.leaky_relu(self.conv3(x)))
        x = self.leaky_relu(self.conv4(x))
        features = F.adaptive_avg_pool2d(x, 1)
        prob = torch.sigmoid(self.fc(features.flatten(1)).float())
        return prob, features

