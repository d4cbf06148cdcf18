"""Small word lists the generated tasks draw from (written here; no download)."""


def words(text: str, keep_order: bool = False) -> list[str]:
    """Whitespace-separated words (sorted and unique unless ``keep_order``)."""
    return text.split() if keep_order else sorted(set(text.split()))


EN_WORDS = words(
    """
apple river stone cloud garden window bread candle dragon forest honey island jacket kettle lemon
mirror needle orange pepper rabbit silver table umbrella violin wagon yellow zebra anchor basket
castle desert engine feather guitar hammer insect jungle kitten ladder marble number ocean pencil
quilt rocket saddle tiger valley walnut butter copper donkey eagle falcon ginger harbor igloo jelly
kernel lantern meadow napkin oyster parrot quarry ribbon salmon tunnel velvet winter almond bottle
circle dinner folder goblet helmet jigsaw kidney lizard magnet noodle pickle puzzle radish spider
teapot turtle vessel wizard barrel cactus dollar elbow finger goose hotel iron jewel knight lobster
mango nectar olive planet queen robin shadow thunder velvet whale yogurt bridge cherry flower grape
horse lamp monkey night paper sugar train water money music summer letter mother
"""
)

ZH_CHARS = list(
    "天地人山水火木金土日月星风雨雪云花草树鸟鱼马牛羊猫狗米面茶酒书画琴棋红黄蓝白黑大小多少"
    "上下左右中前后东西南北春夏秋冬年时分心手口目耳足门窗桌椅车船路桥城村家国河海江湖"
)

ZH_WORDS = words(
    """
苹果 河流 石头 白云 花园 窗户 面包 蜡烛 森林 蜂蜜 岛屿 茶壶 柠檬 镜子 橙子 兔子 银子 桌子 雨伞 城堡
沙漠 羽毛 吉他 锤子 昆虫 梯子 海洋 铅笔 火箭 老虎 山谷 核桃 黄油 铜钱 老鹰 生姜 港口 灯笼 草地 餐巾
鹦鹉 丝带 隧道 冬天 杏仁 瓶子 圆圈 晚饭 头盔 蜥蜴 磁铁 面条 萝卜 蜘蛛 乌龟 巫师 仙人掌 手指 鹅毛 酒店
珠宝 骑士 龙虾 芒果 橄榄 星球 女王 影子 雷声 鲸鱼 桥梁 樱桃 葡萄 马车 台灯 猴子
"""
)
